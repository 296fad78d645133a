// SPDX-License-Identifier: GPL-3.0-or-later

package imapsyntax

import (
	"errors"
	"strings"
	"testing"
)

// validLines pass CheckResponse. Most are the examples of RFC 3501 section
// 7 and 6, RFC 5258 and RFC 5465 (with RFC 3501's grammar applied where an
// example in the RFC is itself not valid, as noted).
var validLines = []string{
	// RFC 3501 7.1
	"* OK IMAP4rev1 server ready",
	"* OK [ALERT] System shutdown in 10 minutes",
	"* NO Disk is 98% full, please delete unnecessary data",
	"* BAD Command line too long",
	"* BYE Autologout; idle for too long",
	"* OK [UNSEEN 17] Message 17 is the first unseen message",
	"* OK [UIDVALIDITY 3857529045] UIDs valid",
	"* OK [UIDNEXT 4392] Predicted next UID",
	`* OK [PERMANENTFLAGS (\Deleted \Seen \*)] Limited`,
	"* OK [READ-WRITE] SELECT completed",
	"* NO [TRYCREATE] no such mailbox",
	"* OK [BADCHARSET (UTF-8 \"ISO-8859-1\")] charsets",
	"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready",
	"* OK [SOMETHING-ELSE with arguments] text",
	// RFC 3501 7.2
	"* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI XPIG-LATIN",
	`* LIST (\Noselect) "/" ~/Mail/foo`,
	`* LIST () "." #news.comp.mail.misc`,
	`* LIST (\Noselect) NIL ""`,
	`* LSUB () "." #news.comp.mail.mime`,
	"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)",
	"* SEARCH 2 3 6",
	"* SEARCH",
	`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`,
	`* FLAGS ()`,
	// RFC 3501 7.3, 7.4
	"* 23 EXISTS",
	"* 0 EXISTS",
	"* 5 RECENT",
	"* 3 EXPUNGE",
	// RFC 3501 7.4.2
	`* 23 FETCH (FLAGS (\Seen) RFC822.SIZE 44827)`,
	`* 12 FETCH (FLAGS (\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL "<B27397-0100000@cac.washington.edu>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))`,
	`* 1 FETCH (UID 1 FLAGS (\Recent))`,
	`* 1 FETCH (FLAGS (\Seen \Recent $Label1 NonJunk) UID 1)`,
	`* 2 FETCH (BODY[HEADER] {12}` + "\r\nSubject: x\r\n" + ` UID 2)`,
	`* 2 FETCH (BODY[1.2.MIME] NIL BODY[]<0> "" BODY[HEADER.FIELDS.NOT (From "To")] "" BODY[3.TEXT] "")`,
	`* 2 FETCH (RFC822.HEADER "x" RFC822.TEXT NIL RFC822 {0}` + "\r\n)",
	`* 2 FETCH (INTERNALDATE " 1-Jan-2024 00:00:00 +0000")`,
	// RFC 3501 7.4.2 BODYSTRUCTURE example (multipart, parts without SP)
	`* 3 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED"))`,
	// the draft's 3.1 example and the module's own forms
	`* 3 FETCH (UID 9 FLAGS () BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 11 1 NIL NIL NIL NIL))`,
	`* 3 FETCH (UID 9 BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 100 NIL ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL))`,
	`* 3 FETCH (UID 9 BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7BIT" 50 (NIL "s" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7BIT" 5 1) 4 NIL NIL ("en" "de") "http://x/" 7 ("a" (1 NIL))))`,
	`* 3 FETCH (BODYSTRUCTURE ("image" "png" NIL NIL NIL "binary" 5 "md5" NIL "en"))`,
	`* 3 FETCH (MODSEQ (12345) UID 3)`,
	// RFC 4551 / 7162
	"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 7 HIGHESTMODSEQ 7011231777)",
	"* STATUS INBOX (HIGHESTMODSEQ 0)",
	"* OK [HIGHESTMODSEQ 715194045007] Highest",
	"* OK [NOMODSEQ] Sorry, this mailbox format doesn't support modsequences",
	"* OK [MODIFIED 7,9:12,*] Conditional STORE failed",
	"* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)",
	// RFC 5258
	`* LIST (\Marked \NoInferiors \Subscribed) "/" "inbox"`,
	`* LIST (\NonExistent \HasChildren) "/" "Fruit"`,
	`* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))`,
	`* LIST (\Subscribed \Remote) "/" "Bar" ()`,
	`* LIST () "/" "Foo" (tag (a (b c) "d") other 7)`,
	// RFC 5465
	`* LIST () "/" "NewMailbox" ("OLDNAME" ("OldMailbox"))`,
	`* LIST () "/" "New" (OLDNAME (INBOX))`,
	"* OK [NOTIFICATIONOVERFLOW] ...A lot of notifications were lost",
	"* NO [BADEVENT (MessageNew MessageExpunge FlagChange AnnotationChange MailboxName SubscriptionChange MailboxMetadataChange ServerMetadataChange)] Unsupported",
	"* NO [BADEVENT (MessageNew (UID BODY.PEEK[HEADER.FIELDS (From)]<0.100>) XEvent)] Unsupported",
	// RFC 5256
	"* SORT 2 3 6",
	"* SORT",
	"* THREAD (2)(3 6 (4 23)(44 7 96))",
	"* THREAD (166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))(179)(177 (183)(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)(194 195)(196 (197)(198))(199)(200 202)(201)(203)(204)(205)(206 207)(208)",
	"* THREAD ((3)(5))",
	// mailbox names
	`* STATUS "~peter/mail/&U,BTFw-/&ZeVnLIqe-" (MESSAGES 1)`,
	`* STATUS "R&-D" (MESSAGES 1)`,
	`* STATUS "&2D3eAA-" (MESSAGES 1)`,
	"* STATUS {3}\r\nbox (MESSAGES 1)",
	`* STATUS "a \"b\" \\c" ()`,
	`* STATUS inbox (UNSEEN 0)`,
	`* LIST () "\"" "a"`,
	`* LIST () "\\" "a"`,
	`* LIST (\HasNoChildren) "/" "Gesendete Objekte"`,
}

func TestValid(t *testing.T) {
	for _, l := range validLines {
		if err := CheckResponse([]byte(l + "\r\n")); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestValidTagged(t *testing.T) {
	for _, l := range []string{
		"a001 OK LOGIN completed",
		"A142 OK [READ-WRITE] SELECT completed",
		"T1 NO [TRYCREATE] Mailbox doesn't exist",
		"x.y BAD Unknown command",
	} {
		if err := CheckTagged([]byte(l + "\r\n")); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestPlainAcceptsRFC3501(t *testing.T) {
	for _, l := range []string{
		`* LIST (\NonExistent) "/" "Gone"`,
		`* LIST (\Noselect \NonExistent) "/" "Gone"`, // a flag-extension in RFC 3501
		`* LIST (\HasNoChildren \Subscribed) "." INBOX`,
		"* STATUS box (MESSAGES 1)",
	} {
		if err := CheckPlainResponse([]byte(l + "\r\n")); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name   string
		line   string // CRLF is added unless noCRLF
		plain  bool
		noCRLF bool
		offset int
		want   string // in the error message
	}{
		{"NIL encoding", `* 1 FETCH (UID 1 BODYSTRUCTURE ("text" "plain" NIL NIL NIL NIL 11 1))`, false, false, 59, "body-fld-enc"},
		{"empty params", `* 1 FETCH (UID 1 FLAGS () BODYSTRUCTURE ("text" "plain" () NIL NIL "7BIT" 11 1 NIL NIL NIL NIL))`, false, false, 57, "NIL, not \"()\""},
		{"empty disposition params", `* 1 FETCH (BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 1 1 NIL ("inline" ())))`, false, false, 79, "NIL, not"},
		{"empty language list", `* 1 FETCH (BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 1 1 NIL NIL ()))`, false, false, 73, "body-fld-lang"},
		{"location list", `* 1 FETCH (BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 1 1 NIL NIL NIL ("u")))`, false, false, 76, "body-fld-loc"},
		{"SP between parts", `* 1 FETCH (BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7BIT" 1 1) ("text" "plain" NIL NIL NIL "7BIT" 1 1) "mixed"))`, false, false, 65, "no SP between parts"},
		{"text without lines", `* 1 FETCH (BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 1))`, false, false, 61, "SP"},
		{"message/rfc822 without envelope", `* 1 FETCH (BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7BIT" 1 NIL))`, false, false, 66, "envelope"},
		{"SP between addresses", `* 1 FETCH (ENVELOPE (NIL NIL ((NIL NIL "a" "b") (NIL NIL "c" "d")) NIL NIL NIL NIL NIL NIL NIL))`, false, false, 47, "no SP between addresses"},
		{"empty address list", `* 1 FETCH (ENVELOPE (NIL NIL () NIL NIL NIL NIL NIL NIL NIL))`, false, false, 30, "empty address list is NIL"},
		{"envelope too short", `* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL))`, false, false, 56, "SP"},
		{"bad atom in flags", `* 1 FETCH (UID 1 FLAGS (\Se]en))`, false, false, 27, `")"`},
		{"keyword with SP quoted", `* 1 FETCH (FLAGS ("a b") UID 1)`, false, false, 18, "flag"},
		{"backslash alone", `* 1 FETCH (FLAGS (\ \Seen) UID 1)`, false, false, 19, "atom after"},
		{"\\* in FETCH FLAGS", `* 1 FETCH (FLAGS (\*) UID 1)`, false, false, 19, "atom after"},
		{"leading SP in FLAGS", `* 1 FETCH (FLAGS ( \Recent) UID 1)`, false, false, 18, "flag"},
		{"8-bit in quoted", "* STATUS \"Entw\xc3\xbcrfe\" (MESSAGES 1)", false, false, 14, "QUOTED-CHAR"},
		{"CR in quoted", "* STATUS \"a\rb\" (MESSAGES 1)", false, false, 11, "QUOTED-CHAR"},
		{"two responses", "* OK [ALERT] x\r\n* 1 EXISTS", false, false, 16, "end of input after CRLF"},
		{"bad escape in quoted", `* STATUS "a\b" (MESSAGES 1)`, false, false, 12, "quoted-specials"},
		{"unbalanced parens", `* 1 FETCH (UID 1 FLAGS (\Seen)`, false, false, 30, `")"`},
		{"extra paren", `* 1 FETCH (UID 1))`, false, false, 17, "CRLF"},
		{"OLDNAME in plain mode", `* LIST () "/" "New" ("OLDNAME" ("Old"))`, true, false, 19, "RFC 3501 LIST has no extended data"},
		{"missing CRLF", `* 3 EXISTS`, false, true, 10, "CRLF"},
		{"LF only", "* 3 EXISTS\n", false, true, 10, "CRLF"},
		{"STATUS unknown item", `* STATUS box (MESSAGES 1 SIZE 9)`, false, false, 25, "status-att"},
		{"STATUS item without value", `* STATUS box (MESSAGES)`, false, false, 22, "SP"},
		{"STATUS number too large", `* STATUS box (MESSAGES 4294967296)`, false, false, 23, "at most 4294967295"},
		{"FETCH seq 0", `* 0 FETCH (UID 1)`, false, false, 2, "nz-number"},
		{"FETCH seq leading zero", `* 01 FETCH (UID 1)`, false, false, 2, "no leading zero"},
		{"UID 0", `* 1 FETCH (UID 0)`, false, false, 15, "nz-number"},
		{"EXPUNGE 0", `* 0 EXPUNGE`, false, false, 2, "nz-number"},
		{"unknown response", `* FOO bar`, false, false, 2, "number, OK"},
		{"8-bit literal mailbox", "* STATUS {3}\r\n\xc3\xbcx (MESSAGES 1)", false, false, 14, "printable US-ASCII"},
		{"bad base64 end", `* STATUS "&Jjo" (MESSAGES 1)`, false, false, 14, `'-' ending`},
		{"base64 of ASCII", `* STATUS "&AGE-" (MESSAGES 1)`, false, false, 11, "no printable US-ASCII"},
		{"base64 padding bits", `* STATUS "&AOF-" (MESSAGES 1)`, false, false, 13, "zero padding bits"},
		{"unpaired surrogate", `* STATUS "&2D0-" (MESSAGES 1)`, false, false, 11, "low surrogate"},
		{"raw control in mailbox", "* STATUS \"a\x7fb\" (MESSAGES 1)", false, false, 11, "printable US-ASCII in a mailbox name"},
		{"LIST keyword attribute", `* LIST (Foo) "/" "a"`, false, false, 8, `mbx-list-flag`},
		{"LIST two sflags", `* LIST (\Noselect \Marked) "/" "a"`, false, false, 18, "at most one"},
		{"LIST long delimiter", `* LIST () "//" "a"`, false, false, 12, `closing the one-character delimiter`},
		{"LIST empty delimiter", `* LIST () "" "a"`, false, false, 11, "QUOTED-CHAR"},
		{"OLDNAME without parens", `* LIST () "/" "New" ("OLDNAME" "Old")`, false, false, 31, `"("`},
		{"CHILDINFO unquoted", `* LIST () "/" "Foo" ("CHILDINFO" (SUBSCRIBED))`, false, false, 34, `"\""`},
		{"literal+ in response", "* STATUS {3+}\r\nbox (MESSAGES 1)", false, false, 11, "no \"+\""},
		{"short literal", "* 1 FETCH (BODY[] {10}\r\nabc)", false, true, 28, "10 bytes"},
		{"NUL in literal", "* 1 FETCH (BODY[] {3}\r\na\x00c)", false, false, 24, "no NUL"},
		{"OK without text", `* OK`, false, false, 4, "SP"},
		{"OK code without text", `* OK [ALERT]`, false, false, 12, "SP"},
		{"8-bit text", "* OK caf\xc3\xa9", false, false, 8, "TEXT-CHAR"},
		{"UIDNEXT without number", `* OK [UIDNEXT] x`, false, false, 13, "SP"},
		{"UIDVALIDITY 0", `* OK [UIDVALIDITY 0] x`, false, false, 18, "nz-number"},
		{"BADEVENT empty", `* NO [BADEVENT ()] x`, false, false, 16, "atom"},
		{"CAPABILITY without IMAP4rev1", `* CAPABILITY IDLE`, false, false, 17, "IMAP4rev1"},
		{"INTERNALDATE bad", `* 1 FETCH (INTERNALDATE "2024-01-01")`, false, false, 27, `"-"`},
		{"BODY section bad", `* 1 FETCH (BODY[FOO] "")`, false, false, 16, "section-msgtext"},
		{"MODSEQ 0", `* 1 FETCH (MODSEQ (0))`, false, false, 19, "mod-sequence-value"},
		{"unknown msg-att", `* 1 FETCH (SIZE 3)`, false, false, 11, "msg-att"},
		{"THREAD nested with one list", `* THREAD (1 (2))`, false, false, 12, "thread-nested"},
		{"SORT 0", `* SORT 0`, false, false, 7, "nz-number"},
		{"value runs into next item", `* 1 FETCH (UID 1FLAGS ())`, false, false, 16, "SP or"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := tt.line
			if !tt.noCRLF {
				line += "\r\n"
			}
			err := Check([]byte(line), Options{Plain: tt.plain})
			if err == nil {
				t.Fatalf("%q passed", line)
			}
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if se.Offset != tt.offset || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%q:\n got %v (offset %d)\nwant offset %d and %q in the message", line, err, se.Offset, tt.offset, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestInvalidTagged(t *testing.T) {
	for _, l := range []string{
		"+ OK x\r\n",
		"a+b OK x\r\n",
		"a1 FINE x\r\n",
		"a1 OK\r\n",
		"a1 OK x",
	} {
		if err := CheckTagged([]byte(l)); err == nil {
			t.Errorf("%q passed", l)
		}
	}
}

// TestPlainRejectsExtended: every form of extended data is refused in the
// plain grammar, with CRLF as what was expected.
func TestPlainRejectsExtended(t *testing.T) {
	for _, l := range []string{
		`* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))`,
		`* LIST () "/" "Foo" ()`,
		`* LSUB () "/" INBOX ("OLDNAME" ("x"))`,
	} {
		err := CheckPlainResponse([]byte(l + "\r\n"))
		if err == nil || !strings.Contains(err.Error(), "expected CRLF (RFC 3501 LIST") {
			t.Errorf("%q: %v", l, err)
		}
		if err := CheckResponse([]byte(l + "\r\n")); err != nil {
			t.Errorf("full grammar: %v", err)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	err := CheckResponse([]byte(`* 1 FETCH (UID 1 BODYSTRUCTURE ("text" "plain" NIL NIL NIL NIL 11 1))` + "\r\n"))
	want := `imapsyntax: byte 59: expected body-fld-enc (a string such as "7BIT"; NIL is not allowed), found "NIL 11 1))\r\n"`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error\n got %v\nwant prefix %s", err, want)
	}
}
