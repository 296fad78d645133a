// SPDX-License-Identifier: GPL-3.0-or-later

package notifycmd

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-imap"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// fields reads a whole command line ("a NOTIFY ...", literals inline) the way
// go-imap v1's server does (Reader.ReadLine, then Command.Parse) and returns
// what a server.Handler's Parse receives.
func fields(t *testing.T, line string) []interface{} {
	t.Helper()
	r := imap.NewReader(bufio.NewReader(strings.NewReader(line + "\r\n")))
	f, err := r.ReadLine()
	if err != nil {
		t.Fatalf("go-imap v1 cannot read %q: %v", line, err)
	}
	var cmd imap.Command
	if err := cmd.Parse(f); err != nil {
		t.Fatalf("go-imap v1 cannot parse %q: %v", line, err)
	}
	if cmd.Name != "NOTIFY" {
		t.Fatalf("%q is a %s command", line, cmd.Name)
	}
	return cmd.Arguments
}

// wire returns the tagged line go-imap v1 writes for err under tag "a".
func wire(t *testing.T, err error) string {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	resp := e.StatusResp()
	resp.Tag = "a"
	var buf bytes.Buffer
	if err := resp.WriteTo(imap.NewWriter(&buf)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

var (
	msgEvents = mapping.NewNotifyEvents(mapping.NotifyMessageNew, mapping.NotifyMessageExpunge)
	allMsg    = mapping.NewNotifyEvents(mapping.NotifyMessageNew, mapping.NotifyMessageExpunge, mapping.NotifyFlagChange)
)

func group(kind mapping.FilterKind, events mapping.NotifyEvents, mailboxes ...string) mapping.EventGroup {
	return mapping.EventGroup{Filter: mapping.Filter{Kind: kind, Mailboxes: mailboxes}, Events: events}
}

func withFetch(g mapping.EventGroup, items ...imap.FetchItem) mapping.EventGroup {
	g.FetchAtts = items
	return g
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		line string
		want mapping.Interest
	}{
		{"NONE", "a NOTIFY NONE", mapping.Interest{}},
		{"none lower case", "a notify none", mapping.Interest{}},

		// RFC 5465 section 3.1, example "b" with erratum 1804's
		// parentheses, and "subtree Lists" given MessageExpunge as section 5
		// requires (the example as printed is in TestErrorLines).
		{"RFC 5465 3.1 b, rules applied",
			"b notify set status (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))",
			mapping.Interest{Status: true, Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, msgEvents), "UID", "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT)]"),
				group(mapping.FilterSubtree, msgEvents, "Lists"),
			}}},
		// Example "e", likewise.
		{"RFC 5465 3.1 e, rules applied",
			"e notify set (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge)) (mailboxes misc (MessageNew MessageExpunge))",
			mapping.Interest{Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, msgEvents), "UID", "BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT)]"),
				group(mapping.FilterSubtree, msgEvents, "Lists"),
				group(mapping.FilterMailboxes, msgEvents, "misc"),
			}}},

		// FairEmail.
		{"FairEmail",
			"a NOTIFY SET STATUS (selected (MessageNew (uid) MessageExpunge FlagChange)) (subscribed (MessageNew MessageExpunge FlagChange))",
			mapping.Interest{Status: true, Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, allMsg), "UID"),
				group(mapping.FilterSubscribed, allMsg),
			}}},
		// Evolution (evolution-data-server camel-imapx-server.c, NOTIFY_CMD,
		// with BODYSTRUCTURE enabled and without; PREVIEW only when the
		// server has it).
		{"Evolution",
			"a NOTIFY SET (selected (MessageNew (UID RFC822.SIZE RFC822.HEADER FLAGS BODYSTRUCTURE) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
			mapping.Interest{Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, allMsg), "UID", "RFC822.SIZE", "RFC822.HEADER", "FLAGS", "BODYSTRUCTURE"),
				group(mapping.FilterPersonal, msgEvents|mapping.NewNotifyEvents(mapping.NotifyMailboxName, mapping.NotifySubscriptionChange)),
			}}},
		{"Evolution without BODYSTRUCTURE",
			"a NOTIFY SET (selected (MessageNew (UID RFC822.SIZE RFC822.HEADER FLAGS) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
			mapping.Interest{Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, allMsg), "UID", "RFC822.SIZE", "RFC822.HEADER", "FLAGS"),
				group(mapping.FilterPersonal, msgEvents|mapping.NewNotifyEvents(mapping.NotifyMailboxName, mapping.NotifySubscriptionChange)),
			}}},

		// Case does not matter for keywords and event names.
		{"case",
			"a nOtIfY sEt StAtUs (SELECTED-delayed (messagenew (Uid Body.Peek[Header]) MESSAGEEXPUNGE flagchange)) (Personal (mailboxname subscriptionCHANGE)) (SUBTREE work NONE) (InBoxes none)",
			mapping.Interest{Status: true, Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelectedDelayed, allMsg), "UID", "BODY.PEEK[HEADER]"),
				group(mapping.FilterPersonal, mapping.NewNotifyEvents(mapping.NotifyMailboxName, mapping.NotifySubscriptionChange)),
				group(mapping.FilterSubtree, 0, "work"),
				group(mapping.FilterInboxes, 0),
			}}},

		// Mailbox names: quoted, literal, modified UTF-7, INBOX in any
		// case, a name that is a keyword, NIL; a list or one name.
		{"literal and modified UTF-7",
			"a NOTIFY SET (mailboxes ({5}\r\nhello \"Caf&AOk-\" inbox NONE NIL) (MessageNew MessageExpunge)) (subtree {8}\r\nLists/go (MailboxName))",
			mapping.Interest{Groups: []mapping.EventGroup{
				group(mapping.FilterMailboxes, msgEvents, "hello", "Café", "INBOX", "NONE", "NIL"),
				group(mapping.FilterSubtree, mapping.NewNotifyEvents(mapping.NotifyMailboxName), "Lists/go"),
			}}},
		{"mailbox named like a keyword", "a NOTIFY SET (mailboxes NONE (SubscriptionChange)) (subtree (Lists \"Misc\") NONE)",
			mapping.Interest{Groups: []mapping.EventGroup{
				group(mapping.FilterMailboxes, mapping.NewNotifyEvents(mapping.NotifySubscriptionChange), "NONE"),
				group(mapping.FilterSubtree, 0, "Lists", "Misc"),
			}}},

		// Events repeated, fetch-att macros expanded, duplicates dropped.
		{"repeats", "a NOTIFY SET (selected (MessageNew (FAST uid) MessageExpunge MessageNew (FLAGS UID))) (subscribed (MessageNew MessageExpunge MessageNew))",
			mapping.Interest{Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, msgEvents), "FLAGS", "INTERNALDATE", "RFC822.SIZE", "UID"),
				group(mapping.FilterSubscribed, msgEvents),
			}}},
		{"selected without message events", "a NOTIFY SET (selected NONE) (personal (MailboxName))",
			mapping.Interest{Groups: []mapping.EventGroup{
				group(mapping.FilterSelected, 0),
				group(mapping.FilterPersonal, mapping.NewNotifyEvents(mapping.NotifyMailboxName)),
			}}},
		{"partial body section", "a NOTIFY SET (selected (MessageNew (BODY.PEEK[1.TEXT]<0.100> ENVELOPE INTERNALDATE BODY RFC822.TEXT) MessageExpunge))",
			mapping.Interest{Groups: []mapping.EventGroup{
				withFetch(group(mapping.FilterSelected, msgEvents), "BODY.PEEK[1.TEXT]<0.100>", "ENVELOPE", "INTERNALDATE", "BODY", "RFC822.TEXT"),
			}}},

		// go-imap v2's imapclient (after beta.8): "(STATUS)", a bare list
		// of mailboxes, a group without events.
		{"go-imap v2 (STATUS)", "a NOTIFY SET (STATUS) (PERSONAL (MessageNew MessageExpunge FlagChange))",
			mapping.Interest{Status: true, Groups: []mapping.EventGroup{group(mapping.FilterPersonal, allMsg)}}},
		{"go-imap v2 bare mailbox list", "a NOTIFY SET ((INBOX \"Sent\") (MessageNew MessageExpunge FlagChange))",
			mapping.Interest{Groups: []mapping.EventGroup{group(mapping.FilterMailboxes, allMsg, "INBOX", "Sent")}}},
		{"go-imap v2 subtree list", "a NOTIFY SET (SUBTREE (\"Lists\") (MessageNew MessageExpunge))",
			mapping.Interest{Groups: []mapping.EventGroup{group(mapping.FilterSubtree, msgEvents, "Lists")}}},
		{"go-imap v2 group without events", "a NOTIFY SET (SELECTED) ((INBOX)) (PERSONAL (MailboxName))",
			mapping.Interest{Groups: []mapping.EventGroup{
				group(mapping.FilterSelected, 0),
				group(mapping.FilterMailboxes, 0, "INBOX"),
				group(mapping.FilterPersonal, mapping.NewNotifyEvents(mapping.NotifyMailboxName)),
			}}},
		{"go-imap v2 fixed encoder", "a NOTIFY SET STATUS (MAILBOXES (INBOX \"Sent\") (MessageNew MessageExpunge FlagChange))",
			mapping.Interest{Status: true, Groups: []mapping.EventGroup{group(mapping.FilterMailboxes, allMsg, "INBOX", "Sent")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(fields(t, tt.line))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.line, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tt.line, got, tt.want)
			}
			// String writes it back in the canonical form, which parses
			// to the same value.
			again, err := Parse(fields(t, "a NOTIFY "+got.String()))
			if err != nil {
				t.Fatalf("Parse(String() = %q): %v", got.String(), err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip through %q\n got %#v\nwant %#v", got.String(), again, got)
			}
		})
	}
}

func TestString(t *testing.T) {
	got, err := Parse(fields(t, "a NOTIFY SET STATUS (selected (MessageNew (uid) MessageExpunge FlagChange)) (subtree (inbox \"Caf&AOk-\") (MessageNew MessageExpunge)) (mailboxes {3}\r\na\"b NONE) (subscribed (SubscriptionChange))"))
	if err != nil {
		t.Fatal(err)
	}
	want := `SET STATUS (selected (MessageNew (UID) MessageExpunge FlagChange)) (subtree (INBOX "Caf&AOk-") (MessageNew MessageExpunge)) (mailboxes ("a\"b") NONE) (subscribed (SubscriptionChange))`
	if s := got.String(); s != want {
		t.Fatalf("String()\n got %s\nwant %s", s, want)
	}
	if s := (mapping.Interest{}).String(); s != "NONE" {
		t.Fatalf("zero Interest String() = %q, want NONE", s)
	}
}

// TestErrorLines: each refusal, as the exact tagged line go-imap v1 writes.
func TestErrorLines(t *testing.T) {
	const badEvent = "a NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] "
	tests := []struct{ line, want string }{
		// The grammar.
		{"a NOTIFY", "a BAD NOTIFY needs SET or NONE"},
		{"a NOTIFY FOO", "a BAD NOTIFY needs SET or NONE"},
		{"a NOTIFY (SET)", "a BAD NOTIFY needs SET or NONE"},
		{"a NOTIFY NONE (personal NONE)", "a BAD NOTIFY NONE takes no arguments"},
		{"a NOTIFY SET", "a BAD NOTIFY SET needs at least one event group"},
		{"a NOTIFY SET STATUS", "a BAD NOTIFY SET needs at least one event group"},
		{"a NOTIFY SET personal", `a BAD NOTIFY SET: event group 1: expected a parenthesised event group`},
		{"a NOTIFY SET STATUS STATUS (personal NONE)", `a BAD NOTIFY SET: event group 1: expected a parenthesised event group`},
		{"a NOTIFY SET ()", "a BAD NOTIFY SET: event group 1: empty event group"},
		{"a NOTIFY SET (personal NONE) (foobar (MessageNew MessageExpunge))", `a BAD NOTIFY SET: event group 2: unknown mailbox filter "foobar"`},
		{"a NOTIFY SET ({8}\r\npersonal NONE)", `a BAD NOTIFY SET: event group 1: unknown mailbox filter a literal`},
		{"a NOTIFY SET (subtree)", "a BAD NOTIFY SET: event group 1: subtree needs a mailbox or a list of mailboxes"},
		{"a NOTIFY SET (mailboxes () (MessageNew MessageExpunge))", "a BAD NOTIFY SET: event group 1: empty list of mailboxes"},
		{"a NOTIFY SET (mailboxes (INBOX (Sent)) NONE)", "a BAD NOTIFY SET: event group 1: expected a mailbox name, got a list"},
		{"a NOTIFY SET (mailboxes \"&Jjo\" NONE)", `a BAD NOTIFY SET: event group 1: mailbox name "&Jjo" is not valid modified UTF-7`},
		{"a NOTIFY SET (personal MessageNew)", `a BAD NOTIFY SET: event group 1: expected a list of events or NONE, got "MessageNew"`},
		{"a NOTIFY SET (personal ())", "a BAD NOTIFY SET: event group 1: empty list of events"},
		{"a NOTIFY SET (personal (MessageNew MessageExpunge) (MailboxName))", "a BAD NOTIFY SET: event group 1: unexpected a list after the events"},
		{"a NOTIFY SET (personal NONE NONE)", `a BAD NOTIFY SET: event group 1: unexpected "NONE" after the events`},
		{"a NOTIFY SET (personal ({10}\r\nMessageNew MessageExpunge))", "a BAD NOTIFY SET: event group 1: expected an event name, got a literal"},
		{"a NOTIFY SET (selected (MessageNew (UID) (FLAGS) MessageExpunge))", "a BAD NOTIFY SET: event group 1: expected an event name, got a list"},
		{"a NOTIFY SET (selected (MessageNew () MessageExpunge))", "a BAD NOTIFY SET: event group 1: empty fetch-att list"},
		{"a NOTIFY SET (selected (MessageNew (UID MODSEQ) MessageExpunge))", `a BAD NOTIFY SET: event group 1: unknown FETCH attribute "MODSEQ"`},
		{"a NOTIFY SET (selected (MessageNew (BODY.PEEK[HEADR]) MessageExpunge))", `a BAD NOTIFY SET: event group 1: unknown FETCH attribute "BODY.PEEK[HEADR]"`},
		{"a NOTIFY SET (selected (MessageNew ((UID)) MessageExpunge))", "a BAD NOTIFY SET: event group 1: expected a FETCH attribute, got a list"},

		// The rules of sections 5, 6.1 and 8.
		{"a NOTIFY SET (personal (MessageNew))", "a BAD NOTIFY SET: event group 1: MessageNew and MessageExpunge must be given together"},
		{"a NOTIFY SET (personal (MessageExpunge))", "a BAD NOTIFY SET: event group 1: MessageNew and MessageExpunge must be given together"},
		{"a NOTIFY SET (selected (MessageNew FlagChange))", "a BAD NOTIFY SET: event group 1: MessageNew and MessageExpunge must be given together"},
		{"a NOTIFY SET (personal (FlagChange))", "a BAD NOTIFY SET: event group 1: FlagChange requires MessageNew and MessageExpunge"},
		{"a NOTIFY SET (personal (MailboxName AnnotationChange))", "a BAD NOTIFY SET: event group 1: AnnotationChange requires MessageNew and MessageExpunge"},
		{"a NOTIFY SET (selected NONE) (personal (MessageNew (UID) MessageExpunge))", "a BAD NOTIFY SET: event group 2: a fetch-att list for MessageNew is allowed only with selected or selected-delayed, not personal"},
		{"a NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))", "a BAD NOTIFY SET: event group 2: selected-delayed after selected: only one of selected and selected-delayed may be given"},
		{"a NOTIFY SET (selected NONE) (selected NONE)", "a BAD NOTIFY SET: event group 2: selected after selected: only one of selected and selected-delayed may be given"},
		{"a NOTIFY SET (selected (MessageNew MessageExpunge MailboxName))", "a BAD NOTIFY SET: event group 1: MailboxName is not a message event and cannot be given for selected"},
		{"a NOTIFY SET (selected-delayed (ServerMetadataChange))", "a BAD NOTIFY SET: event group 1: ServerMetadataChange is not a message event and cannot be given for selected-delayed"},
		// RFC 5465 section 3.1's examples as printed (erratum 1804 applied):
		// "(subtree Lists (MessageNew))" breaks section 5.
		{"b notify set status (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew))",
			"a BAD NOTIFY SET: event group 2: MessageNew and MessageExpunge must be given together"},
		{"e notify set (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew)) (mailboxes misc (MessageNew))",
			"a BAD NOTIFY SET: event group 2: MessageNew and MessageExpunge must be given together"},
		// ... and before the erratum, events without parentheses.
		{"b notify set status (selected MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge) (subtree Lists MessageNew)",
			`a BAD NOTIFY SET: event group 1: expected a list of events or NONE, got "MessageNew"`},

		// Unsupported events: NO, not BAD, once the request is valid.
		{"a NOTIFY SET (selected (MessageNew MessageExpunge AnnotationChange))", badEvent + "unsupported NOTIFY event: AnnotationChange"},
		{"a NOTIFY SET (personal (MailboxMetadataChange)) (subtree Lists (ServerMetadataChange mailboxmetadatachange))", badEvent + "unsupported NOTIFY event: MailboxMetadataChange ServerMetadataChange"},
		{"a NOTIFY SET (personal (MailboxName FooBar)) (selected (Baz))", badEvent + `unsupported NOTIFY event: "FooBar" "Baz"`},
		// A broken rule wins over an unsupported event.
		{"a NOTIFY SET (personal (AnnotationChange)) (subscribed (FooBar))", "a BAD NOTIFY SET: event group 1: AnnotationChange requires MessageNew and MessageExpunge"},
	}
	for _, tt := range tests {
		in, err := Parse(fields(t, tt.line))
		if err == nil {
			t.Errorf("Parse(%q) = %v, want %s", tt.line, in, tt.want)
			continue
		}
		if !reflect.DeepEqual(in, mapping.Interest{}) {
			t.Errorf("Parse(%q) returned %#v with its error", tt.line, in)
		}
		if got := wire(t, err); got != tt.want+"\r\n" {
			t.Errorf("Parse(%q)\n got %q\nwant %q", tt.line, got, tt.want+"\r\n")
		}
		// A BAD can be returned from a server.Handler's Parse, whose
		// error go-imap v1 writes as "tag BAD " + Error().
		var e *Error
		errors.As(err, &e)
		if e.Type == imap.StatusRespBad && "a BAD "+err.Error() != tt.want {
			t.Errorf("Parse(%q): Error() = %q does not make %q", tt.line, err.Error(), tt.want)
		}
	}
}

// TestNonexistentMailboxesAreFine: RFC 5465 section 6.6 ignores names of
// mailboxes that do not exist; Parse keeps them and matching finds nothing.
func TestNonexistentMailboxesAreFine(t *testing.T) {
	in, err := Parse(fields(t, "a NOTIFY SET (mailboxes (nosuch \"Also/Not\") (MessageNew MessageExpunge))"))
	if err != nil {
		t.Fatal(err)
	}
	if in.Wants(0, mapping.MailboxFacts{Name: "INBOX"}) {
		t.Fatal("an invalid kind is wanted")
	}
	if m := in.Match(mapping.NotifyMessageNew, mapping.MailboxFacts{Name: "INBOX", Delimiter: "/"}); m.Group != -1 || m.Wanted {
		t.Fatalf("INBOX matched %+v", m)
	}
	if m := in.Match(mapping.NotifyMessageNew, mapping.MailboxFacts{Name: "nosuch", Delimiter: "/"}); !m.Wanted || !m.Status {
		t.Fatalf("nosuch, once created, matched %+v", m)
	}
}

// TestDocumentedLines: every refusal docs/notify.md shows, in its table of
// rules and its C:/S: examples, is the line Parse gives.
func TestDocumentedLines(t *testing.T) {
	doc, err := os.ReadFile("../docs/notify.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("\\| `([^`]+)` \\| `(a (?:BAD|NO) [^`]+)` \\|$")
	var n int
	lines := strings.Split(string(doc), "\n")
	for i, l := range lines {
		var cmd, want string
		if m := row.FindStringSubmatch(l); m != nil {
			cmd, want = "a NOTIFY SET "+m[1], m[2]
		} else if c, ok := strings.CutPrefix(l, "C: "); ok && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "S: ") {
			resp := strings.TrimPrefix(lines[i+1], "S: ")
			if !strings.Contains(resp, " NO ") && !strings.Contains(resp, " BAD ") {
				continue
			}
			cmd, want = c, resp
		} else {
			continue
		}
		n++
		tag, _, _ := strings.Cut(cmd, " ")
		_, perr := Parse(fields(t, cmd))
		if perr == nil {
			t.Errorf("docs/notify.md: %q is accepted, the doc says %q", cmd, want)
			continue
		}
		got := strings.TrimSuffix(wire(t, perr), "\r\n")
		if got = tag + strings.TrimPrefix(got, "a"); got != want {
			t.Errorf("docs/notify.md: %q\n gives %q\n  says %q", cmd, got, want)
		}
	}
	t.Logf("%d documented refusals checked", n)
	if n < 7 {
		t.Errorf("found %d documented refusals in docs/notify.md, want at least 7", n)
	}
}
