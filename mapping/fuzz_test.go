// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
)

var roundTripItems = StatusItems{StatusMessages, StatusRecent, StatusUIDNext, StatusUIDValidity, StatusUnseen}

// checkNameRoundTrip asserts that name survives LIST (as mailbox and as
// OLDNAME) and STATUS through go-imap v2's client.
func checkNameRoundTrip(t *testing.T, name string) {
	t.Helper()
	wire := MailboxName(name)
	if !IsInbox(name) && (len(wire) < 2 || wire[0] != '"' || wire[len(wire)-1] != '"') {
		t.Fatalf("MailboxName(%q) = %q: not a quoted string", name, wire)
	}
	for _, c := range wire {
		if c < 0x20 || c > 0x7e {
			t.Fatalf("MailboxName(%q) = %q: byte %#x is not printable ASCII", name, wire, c)
		}
	}

	want := decodedName(name)
	line := ListLine([]string{`\HasNoChildren`}, "/", name, "")
	strict(t, line, true)
	d, err := parseListV2(t, line)
	if err != nil {
		t.Fatalf("LIST %q: go-imap v2: %v", line, err)
	}
	if d.Mailbox != want {
		t.Fatalf("LIST %q decoded to %q, want %q", line, d.Mailbox, want)
	}

	line = ListLine(nil, "", "renamed", name)
	strict(t, line, false)
	d, err = parseListV2(t, line)
	if err != nil {
		t.Fatalf("LIST %q: go-imap v2: %v", line, err)
	}
	if d.OldName != want || d.Mailbox != "renamed" {
		t.Fatalf("LIST %q decoded to mailbox %q, OLDNAME %q; want OLDNAME %q", line, d.Mailbox, d.OldName, want)
	}

	line = StatusLine(name, roundTripItems, Status{Messages: 1, Recent: 2, UIDNext: 3, UIDValidity: 4, Unseen: 5})
	strict(t, line, true)
	st, err := parseStatusV2(t, name, line)
	if err != nil {
		t.Fatalf("STATUS %q: %v", line, err)
	}
	if st.NumMessages == nil || *st.NumMessages != 1 || st.UIDNext != 3 || st.UIDValidity != 4 || st.NumUnseen == nil || *st.NumUnseen != 5 {
		t.Fatalf("STATUS %q decoded to %+v", line, st)
	}
}

var nameSeeds = []string{
	"INBOX", "inbox", "Inbox", "INBOX/Sub", "box", "with space", `say "hi"`, `back\slash`, `"\`,
	"Entwürfe", "&", "R&D", "&-", "&Jjo-", "~peter/mail/台北/日本語", "😀", "a😀b&c", "tab\there",
	"\u007f", "\ufffd", "ü&ü", "Gesendete Objekte", "[Gmail]/Sent Mail", "%*", "{3}", ")",
}

func TestNameRoundTrip(t *testing.T) {
	for _, name := range nameSeeds {
		t.Run(name, func(t *testing.T) { checkNameRoundTrip(t, name) })
	}
}

// FuzzMailboxName: every name IMAP can carry (event.CheckMailboxName)
// comes out of ListLine (as mailbox and as OLDNAME) and StatusLine as lines
// go-imap v2 parses, and decodes to the same UTF-8 name. Run it with
//
//	go test -run '^$' -fuzz '^FuzzMailboxName$' -fuzztime 60s ./mapping
func FuzzMailboxName(f *testing.F) {
	for _, s := range nameSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		// Most random byte strings are not valid UTF-8: repair them rather
		// than skip, so every execution tests a name.
		name = strings.ToValidUTF8(name, "\ufffd")
		name = strings.Map(func(r rune) rune {
			if r == 0 || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, name)
		if event.CheckMailboxName(name) != nil {
			t.Skip()
		}
		checkNameRoundTrip(t, name)
	})
}

// TestMapLinesParse: every line Map and StatusView produce parses in go-imap
// v2 and carries the event's names.
func TestMapLinesParse(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	sv := NewStatusView(DefaultPolicy().StatusItems)
	for _, name := range nameSeeds {
		for _, k := range event.Kinds() {
			e := event.Event{Kind: k, Account: "alice", Mailbox: name, Delimiter: "/", Attrs: []string{`\HasNoChildren`}, Subscribed: true, Origin: other}
			if k == event.MailboxRename {
				e.OldMailbox = name + " (old)"
			}
			if IsInbox(name) {
				continue // message events in the selected mailbox write nothing of ours
			}
			plan := Map(DraftPolicy(), e, view)
			switch plan.Action {
			case WriteLines:
				for i, line := range plan.Lines {
					strict(t, line, true) // a plain client: no LIST extended data
					d, err := parseListV2(t, line)
					if err != nil {
						t.Fatalf("%v %q: line %q: go-imap v2: %v", k, name, line, err)
					}
					want := name
					if k == event.MailboxRename && i < len(plan.Lines)-1 {
						// A plain client is told the old name is gone first.
						want = e.OldMailbox
						if !bytes.Contains(line, []byte(`(\NonExistent)`)) {
							t.Fatalf("rename: old name's line %q", line)
						}
					}
					if d.Mailbox != want || d.OldName != "" {
						t.Fatalf("%v %q: line %q decoded to %q (old %q)", k, name, line, d.Mailbox, d.OldName)
					}
					if k == event.MailboxDelete && !bytes.Contains(line, []byte(`(\NonExistent)`)) {
						t.Fatalf("delete line %q", line)
					}
				}
			case NeedStatus:
				sv.Forget(plan.Mailbox)
				line, changed := sv.Update(plan.Mailbox, Status{Messages: 7, UIDNext: 8, Unseen: 1})
				if !changed {
					t.Fatalf("%v %q: no STATUS line after Forget", k, name)
				}
				strict(t, line, true)
				if _, err := parseStatusV2(t, name, line); err != nil {
					t.Fatalf("%v %q: line %q: %v", k, name, line, err)
				}
			default:
				t.Fatalf("%v %q: unexpected plan %s", k, name, fmtPlan(plan))
			}
		}
	}
}

// TestWireHarnessRejects makes sure the v2 harness can fail: malformed or
// mismatched lines are reported, not silently dropped.
func TestWireHarnessRejects(t *testing.T) {
	rejects := []struct {
		name  string
		parse func() error
	}{
		{"LIST with a bad quoted name", func() error {
			_, err := parseListV2(t, []byte("* LIST () \"/\" \"a\"b\"\r\n"))
			return err
		}},
		{"LIST with invalid modified UTF-7", func() error {
			_, err := parseListV2(t, []byte("* LIST () \"/\" \"&Jjo\"\r\n"))
			return err
		}},
		{"STATUS for another mailbox", func() error {
			_, err := parseStatusV2(t, "other", StatusLine("box", roundTripItems, Status{}))
			return err
		}},
		{"FETCH with a non-numeric UID", func() error {
			_, err := parseFetchV2(t, []byte("* 1 FETCH (UID nine FLAGS (\\Seen))\r\n"))
			return err
		}},
		{"FETCH with an invalid flag", func() error {
			_, err := parseFetchV2(t, []byte("* 1 FETCH (UID 9 FLAGS (\\Se]en))\r\n"))
			return err
		}},
	}
	for _, r := range rejects {
		start := time.Now()
		if err := r.parse(); err == nil {
			t.Errorf("%s: parsed", r.name)
		} else {
			t.Logf("%s: %v (%v)", r.name, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
