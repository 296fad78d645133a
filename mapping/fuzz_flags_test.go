// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

// Fuzz targets for everything mapping writes besides bare names
// (FuzzMailboxName): FETCH lines with arbitrary flags and keywords, LIST
// lines with arbitrary attributes, delimiters and old names, STATUS lines
// with arbitrary values, and Map on arbitrary events. The property is
// always the one a strict client needs: the line parses in go-imap v2 as
// one response of the expected kind and carries exactly what it was given
// (what IMAP cannot carry is left out, never written broken).
//
// The seeds are in the f.Add calls and in testdata/fuzz/<target>/ (inputs
// a fuzzing run found worth keeping). Run a target with
//
//	go test -run '^$' -fuzz '^FuzzFetchFlags$' -fuzztime 60s ./mapping

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-imap"
	imapv2 "github.com/emersion/go-imap/v2"

	"github.com/maddy-notify/maddy-notify/event"
)

// flagSeeds are flags and keywords a client can store: go-imap v1's server
// takes any string in a STORE or APPEND flag list (atom, quoted string or
// literal) and go-imap-sql keeps it as is (see TestRobustHostileFlags).
var flagSeeds = []string{
	`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`, `\Recent`, "$Label1", "$Forwarded",
	"NonJunk", "a b", "(", ")", `"`, `\`, "{3}", "]", "a]b", "%", "*", "ü", "\x01", "",
	`\\Seen`, `\`, `$Label1)`, "x\r\ny",
}

// splitFlags turns one fuzzed string into flags: NUL separates them, so
// the fuzzer can vary their number.
func splitFlags(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// carried returns the flags (or attributes) of in that IMAP can carry as
// a flag: an atom, optionally after one backslash (validAttr).
func carried(in []string) []string {
	var out []string
	for _, f := range in {
		if validAttr(f) {
			out = append(out, f)
		}
	}
	return out
}

// carriedListAttrs returns the attributes of in that ListLine writes: a
// backslash and an atom, and of the selectability attributes only the
// first.
func carriedListAttrs(in []string) []string {
	var out []string
	sflag := false
	for _, a := range in {
		if !validListAttr(a) || (isSFlag(a) && sflag) {
			continue
		}
		sflag = sflag || isSFlag(a)
		out = append(out, a)
	}
	return out
}

// sameFlags compares flags as IMAP does: without regard to case.
func sameFlags(got []imapv2.Flag, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !strings.EqualFold(string(got[i]), want[i]) {
			return false
		}
	}
	return true
}

// FuzzFetchFlags: the FETCH line storage.notify writes for a new message
// (FetchLine with UID and FLAGS) parses in go-imap v2 as a FETCH of that
// message with that UID, whatever flags the store hands over, and carries
// exactly the flags IMAP can carry, in order.
func FuzzFetchFlags(f *testing.F) {
	for _, s := range flagSeeds {
		f.Add(uint32(1), uint32(7), s)
	}
	f.Add(uint32(3), uint32(9), `\Seen`+"\x00"+"$Label1"+"\x00"+"a b")
	f.Add(uint32(4294967295), uint32(4294967295), "")
	f.Fuzz(func(t *testing.T, seq, uid uint32, flagList string) {
		if seq == 0 || uid == 0 {
			t.Skip() // no message has sequence number or UID 0
		}
		flags := splitFlags(flagList)
		line := FetchLine(seq, FetchData{UID: uid, Flags: flags}, FetchItems{"FLAGS"})
		strict(t, line, true)
		m, err := parseFetchV2(t, line)
		if err != nil {
			t.Fatalf("flags %q: line %q: go-imap v2: %v", flags, line, err)
		}
		if m.SeqNum != seq || m.UID != imapv2.UID(uid) {
			t.Fatalf("flags %q: line %q parsed as seq %d UID %d", flags, line, m.SeqNum, m.UID)
		}
		if want := carried(flags); !sameFlags(m.Flags, want) {
			t.Fatalf("flags %q: line %q parsed with flags %q, want %q", flags, line, m.Flags, want)
		}
	})
}

// FuzzListLine: a LIST line for any valid mailbox name, old name (RENAME),
// delimiter an event may carry and any attributes parses in go-imap v2
// with the names, the delimiter and the attributes IMAP can carry.
func FuzzListLine(f *testing.F) {
	f.Add("Archive", "", byte('.'), `\HasNoChildren`)
	f.Add("Neu", "Alt", byte('/'), `\HasChildren`+"\x00"+`\Subscribed`)
	f.Add("Entwürfe", "R&D", byte(0), `\NonExistent`)
	f.Add("a\"b", `back\slash`, byte('"'), "")
	f.Add("x", "y", byte('\\'), "(\x00)")
	f.Add("x", "", byte(' '), "foo bar")
	f.Add("x", "", byte(0x01), `\Marked`)
	f.Add("x", "", byte(0x7f), `\Noselect`)
	f.Fuzz(func(t *testing.T, name, oldName string, delim byte, attrList string) {
		if event.CheckMailboxName(name) != nil || (oldName != "" && event.CheckMailboxName(oldName) != nil) {
			t.Skip() // event.Validate drops such events before mapping sees them
		}
		d := ""
		if delim != 0 {
			d = string([]byte{delim})
		}
		ev := event.Event{Kind: event.MailboxCreate, Account: "a", Mailbox: name, Delimiter: d}
		if ev.Validate() != nil {
			t.Skip() // a delimiter no event can carry
		}
		attrs := splitFlags(attrList)
		line := ListLine(attrs, d, name, oldName)
		strict(t, line, oldName == "")
		got, err := parseListV2(t, line)
		if err != nil {
			t.Fatalf("line %q: go-imap v2: %v", line, err)
		}
		if got.Mailbox != decodedName(name) {
			t.Fatalf("line %q: mailbox %q, want %q", line, got.Mailbox, decodedName(name))
		}
		if oldName != "" && got.OldName != decodedName(oldName) {
			t.Fatalf("line %q: OLDNAME %q, want %q", line, got.OldName, decodedName(oldName))
		}
		if want := rune(delim); got.Delim != want {
			t.Fatalf("line %q: delimiter %q, want %q", line, got.Delim, want)
		}
		want := carriedListAttrs(attrs)
		if len(got.Attrs) != len(want) {
			t.Fatalf("line %q: attributes %q, want %q", line, got.Attrs, want)
		}
		for i := range want {
			if !strings.EqualFold(string(got.Attrs[i]), want[i]) {
				t.Fatalf("line %q: attributes %q, want %q", line, got.Attrs, want)
			}
		}
	})
}

// FuzzStatusValues: a STATUS line with any values of every item parses in
// go-imap v2 with those values, for any valid mailbox name.
func FuzzStatusValues(f *testing.F) {
	f.Add("INBOX", uint32(0), uint32(1), uint32(0), uint32(0), uint32(0))
	f.Add("Archive", uint32(4294967295), uint32(4294967295), uint32(4294967295), uint32(4294967295), uint32(4294967295))
	f.Add("日本語", uint32(3), uint32(9), uint32(1), uint32(4242), uint32(2))
	f.Fuzz(func(t *testing.T, name string, messages, uidNext, recent, uidValidity, unseen uint32) {
		if event.CheckMailboxName(name) != nil {
			t.Skip()
		}
		st := Status{Messages: messages, Recent: recent, UIDNext: uidNext, UIDValidity: uidValidity, Unseen: unseen}
		line := StatusLine(name, roundTripItems, st)
		strict(t, line, true) // RFC 3501 has number, not nz-number, for every item
		if uidNext == 0 || uidValidity == 0 {
			t.Skip() // go-imap v2 rejects UIDNEXT and UIDVALIDITY 0 (nz-number, as RFC 9051)
		}
		d, err := parseStatusV2(t, name, line)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if d.NumMessages == nil || *d.NumMessages != messages || uint32(d.UIDNext) != uidNext ||
			d.UIDValidity != uidValidity || d.NumUnseen == nil || *d.NumUnseen != unseen {
			t.Fatalf("line %q parsed as %+v", line, d)
		}
	})
}

// FuzzMapEvent: for any event that passes event.Validate, every line Map
// writes for any session of the account parses in go-imap v2 as a LIST
// line with the event's names.
func FuzzMapEvent(f *testing.F) {
	for _, k := range event.Kinds() {
		f.Add(uint8(k), "Archive", "Old", byte('.'), `\HasNoChildren`, true, uint64(20), "INBOX")
	}
	f.Add(uint8(event.MailboxRename), "INBOX", "inbox", byte('/'), "", false, uint64(0), "")
	f.Add(uint8(event.SubscriptionChange), "a\"b", "", byte(0), `\Subscribed`+"\x00"+"a b", true, uint64(10), "a\"b")
	f.Fuzz(func(t *testing.T, kind uint8, mailbox, oldName string, delim byte, attrList string, subscribed bool, origin uint64, selected string) {
		ev := event.Event{Kind: event.Kind(kind), Account: "alice", Mailbox: mailbox, OldMailbox: oldName,
			Attrs: splitFlags(attrList), Subscribed: subscribed, Origin: origin}
		if delim != 0 {
			ev.Delimiter = string([]byte{delim})
		}
		if ev.Validate() != nil {
			t.Skip()
		}
		plan := Map(DraftPolicy(), ev, SessionView{ID: 10, Account: "alice", Selected: selected, Idling: true})
		if plan.Action != WriteLines {
			return
		}
		for i, line := range plan.Lines {
			strict(t, line, true) // a plain client: no LIST extended data
			d, err := parseListV2(t, line)
			if err != nil {
				t.Fatalf("%v: line %q: go-imap v2: %v", ev, line, err)
			}
			want := decodedName(mailbox)
			if ev.Kind == event.MailboxRename && i < len(plan.Lines)-1 {
				// A plain client is told the old name is gone first.
				want = decodedName(oldName)
				if !bytes.Contains(line, []byte(`(\NonExistent)`)) {
					t.Fatalf("%v: old name's line %q lacks \\NonExistent", ev, line)
				}
			}
			if d.Mailbox != want || d.OldName != "" {
				t.Fatalf("%v: line %q parsed as %q (OLDNAME %q)", ev, line, d.Mailbox, d.OldName)
			}
			if ev.Kind == event.MailboxDelete && !bytes.Contains(line, []byte(`(\NonExistent)`)) {
				t.Fatalf("%v: line %q lacks \\NonExistent", ev, line)
			}
		}
	})
}

// FuzzBodyStructure: the FETCH line for a new message is RFC 3501 syntax
// (internal/imapsyntax) for any structure the store may hand over: any
// header text in every field, parameters or none, multipart, nested and
// message/rfc822 parts, with or without envelope. shape's bits choose the
// structure.
func FuzzBodyStructure(f *testing.F) {
	f.Add("text", "plain", "", "", "", "charset", "utf-8", "", "", "", "", uint8(0), uint32(11), uint32(1))
	f.Add("application", "pdf", "base64", "<1@x>", "Bericht für Jänner", "name", "a b.pdf", "attachment", "de", "http://x/", "md5", uint8(0x0f), uint32(5), uint32(0))
	f.Add("", "", "7bit", "\x00", "\r\n", "", "", "inline", "", "", "", uint8(0xff), uint32(0), uint32(0))
	f.Add("message", "rfc822", "", "a\"b", `c\d`, "k", "", "x", "", "", "", uint8(0x30), uint32(1), uint32(2))
	f.Fuzz(func(t *testing.T, typ, sub, enc, id, desc, pkey, pval, disp, lang, loc, md5 string, shape uint8, size, lines uint32) {
		part := func() *imap.BodyStructure {
			bs := &imap.BodyStructure{MIMEType: typ, MIMESubType: sub, Encoding: enc, Id: id, Description: desc,
				Size: size, Lines: lines, Extended: shape&1 != 0, Disposition: disp, MD5: md5}
			if pkey != "" || shape&2 != 0 {
				bs.Params = map[string]string{pkey: pval}
			}
			if shape&4 != 0 {
				bs.DispositionParams = map[string]string{pval: pkey}
			}
			if lang != "" || shape&8 != 0 {
				bs.Language = []string{lang}
			}
			if loc != "" {
				bs.Location = []string{loc}
			}
			return bs
		}
		bs := part()
		if shape&0x10 != 0 {
			bs.Envelope = &imap.Envelope{Subject: desc, MessageId: id,
				From: []*imap.Address{{PersonalName: desc, MailboxName: pkey, HostName: pval}, {MailboxName: id}}}
			if shape&0x20 != 0 {
				bs.BodyStructure = part()
			}
		}
		if shape&0x40 != 0 {
			bs = &imap.BodyStructure{MIMEType: "multipart", MIMESubType: sub, Params: bs.Params, Extended: true,
				Parts: []*imap.BodyStructure{bs, part()}}
		}
		if shape&0x80 != 0 {
			bs = &imap.BodyStructure{MIMEType: "Multipart", MIMESubType: "mixed", Extended: true,
				Parts: []*imap.BodyStructure{part(), bs}}
		}
		d := FetchData{UID: 1, BodyStructure: bs, Envelope: bs.Envelope, Flags: []string{typ, `\Seen`}}
		strict(t, FetchLine(1, d, FetchItems{"FLAGS", "BODYSTRUCTURE", "ENVELOPE"}), true)
	})
}
