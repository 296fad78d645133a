// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
)

func TestParseStatusItems(t *testing.T) {
	tests := []struct {
		in      []string
		want    StatusItems
		wantErr string
	}{
		{[]string{"MESSAGES", "UIDNEXT", "UNSEEN"}, StatusItems{"MESSAGES", "UIDNEXT", "UNSEEN"}, ""},
		{[]string{"unseen", "Messages"}, StatusItems{"UNSEEN", "MESSAGES"}, ""},
		{[]string{"UIDVALIDITY", "RECENT", "MESSAGES", "UNSEEN", "UIDNEXT"}, StatusItems{"UIDVALIDITY", "RECENT", "MESSAGES", "UNSEEN", "UIDNEXT"}, ""},
		{nil, nil, "no STATUS items"},
		{[]string{"UNSEEN"}, nil, "must include MESSAGES"},
		{[]string{"MESSAGES", "SIZE"}, nil, `unknown STATUS item "SIZE"`},
		{[]string{"MESSAGES", "messages"}, nil, "duplicate STATUS item MESSAGES"},
	}
	for _, tt := range tests {
		got, err := ParseStatusItems(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseStatusItems(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseStatusItems(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestStatusItemsHelpers(t *testing.T) {
	items := StatusItems{"MESSAGES", "UNSEEN"}
	if got := items.Request(); !reflect.DeepEqual(got, []imap.StatusItem{imap.StatusMessages, imap.StatusUnseen}) {
		t.Errorf("Request() = %v", got)
	}
	if !items.FlagDependent() {
		t.Error("MESSAGES UNSEEN: FlagDependent() = false")
	}
	if (StatusItems{"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY"}).FlagDependent() {
		t.Error("items without UNSEEN: FlagDependent() = true")
	}
	st := StatusOf(&imap.MailboxStatus{Messages: 1, Recent: 2, UidNext: 3, UidValidity: 4, Unseen: 5})
	if st != (Status{Messages: 1, Recent: 2, UIDNext: 3, UIDValidity: 4, Unseen: 5}) {
		t.Errorf("StatusOf = %+v", st)
	}
	if StatusOf(nil) != (Status{}) {
		t.Error("StatusOf(nil) is not zero")
	}
}

func TestStatusLine(t *testing.T) {
	st := Status{Messages: 3, Recent: 1, UIDNext: 9, UIDValidity: 1700000000, Unseen: 0}
	tests := []struct {
		mailbox string
		items   StatusItems
		want    string
	}{
		{"box", StatusItems{"MESSAGES", "UIDNEXT", "UNSEEN"}, `* STATUS "box" (MESSAGES 3 UIDNEXT 9 UNSEEN 0)` + "\r\n"},
		{"box", StatusItems{"UNSEEN", "UIDNEXT", "MESSAGES"}, `* STATUS "box" (UNSEEN 0 UIDNEXT 9 MESSAGES 3)` + "\r\n"},
		{"inbox", StatusItems{"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"}, `* STATUS INBOX (MESSAGES 3 RECENT 1 UIDNEXT 9 UIDVALIDITY 1700000000 UNSEEN 0)` + "\r\n"},
		{"Entwürfe", StatusItems{"MESSAGES"}, `* STATUS "Entw&APw-rfe" (MESSAGES 3)` + "\r\n"},
		{`a "b" \c`, StatusItems{"MESSAGES"}, `* STATUS "a \"b\" \\c" (MESSAGES 3)` + "\r\n"},
		{"R&D", StatusItems{"MESSAGES"}, `* STATUS "R&-D" (MESSAGES 3)` + "\r\n"},
	}
	for _, tt := range tests {
		line := StatusLine(tt.mailbox, tt.items, st)
		if got := string(line); got != tt.want {
			t.Errorf("StatusLine(%q, %v)\n got %q\nwant %q", tt.mailbox, tt.items, got, tt.want)
		}
		strict(t, line, true)
	}
	max := Status{Messages: 4294967295}
	line := StatusLine("b", StatusItems{"MESSAGES"}, max)
	if got := string(line); got != `* STATUS "b" (MESSAGES 4294967295)`+"\r\n" {
		t.Errorf("max uint32: %q", got)
	}
	strict(t, line, true)
}

func TestStatusLineUnknownItemPanics(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil || !strings.HasPrefix(r.(string), "mapping: ") {
			t.Fatalf("recover() = %v, want a mapping: panic", r)
		}
	}()
	StatusLine("b", StatusItems{"SIZE"}, Status{})
}

func TestStatusViewUpdate(t *testing.T) {
	v := NewStatusView(StatusItems{"MESSAGES", "UNSEEN"})
	steps := []struct {
		mailbox string
		st      Status
		want    string // "" = no line
	}{
		{"box", Status{Messages: 1, Unseen: 1, UIDNext: 2}, `* STATUS "box" (MESSAGES 1 UNSEEN 1)` + "\r\n"}, // first time: always
		{"box", Status{Messages: 1, Unseen: 1, UIDNext: 2}, ""},                                              // same values
		{"box", Status{Messages: 1, Unseen: 1, UIDNext: 3, Recent: 7}, ""},                                   // only unconfigured items changed
		{"box", Status{Messages: 1, Unseen: 0, UIDNext: 3}, `* STATUS "box" (MESSAGES 1 UNSEEN 0)` + "\r\n"},
		{"other", Status{Messages: 1, Unseen: 0}, `* STATUS "other" (MESSAGES 1 UNSEEN 0)` + "\r\n"}, // per mailbox
		{"INBOX", Status{Messages: 5}, `* STATUS INBOX (MESSAGES 5 UNSEEN 0)` + "\r\n"},
		{"inbox", Status{Messages: 5}, ""}, // INBOX in any case is one mailbox
		{"box", Status{Messages: 2, Unseen: 1}, `* STATUS "box" (MESSAGES 2 UNSEEN 1)` + "\r\n"},
		{"box", Status{Messages: 1, Unseen: 0}, `* STATUS "box" (MESSAGES 1 UNSEEN 0)` + "\r\n"}, // back to an older value: still a change
	}
	for i, s := range steps {
		line, changed := v.Update(s.mailbox, s.st)
		if string(line) != s.want || changed != (s.want != "") {
			t.Fatalf("step %d: Update(%q, %+v) = %q, %v; want %q", i, s.mailbox, s.st, line, changed, s.want)
		}
		if changed {
			strict(t, line, true)
		}
	}
	if v.Len() != 3 {
		t.Errorf("Len() = %d, want 3", v.Len())
	}
	if !reflect.DeepEqual(v.Items(), StatusItems{"MESSAGES", "UNSEEN"}) {
		t.Errorf("Items() = %v", v.Items())
	}
}

// TestStatusViewBurst: after any burst, the last line sent for a mailbox
// carries the final values.
func TestStatusViewBurst(t *testing.T) {
	v := NewStatusView(StatusItems{"MESSAGES", "UIDNEXT"})
	var last string
	for i := uint32(1); i <= 50; i++ {
		st := Status{Messages: i % 7, UIDNext: 100 + i/3}
		if line, ok := v.Update("box", st); ok {
			last = string(line)
		}
	}
	if want := string(StatusLine("box", StatusItems{"MESSAGES", "UIDNEXT"}, Status{Messages: 50 % 7, UIDNext: 100 + 50/3})); last != want {
		t.Fatalf("last line %q, want %q", last, want)
	}
}

func TestStatusViewForgetRename(t *testing.T) {
	items := StatusItems{"MESSAGES"}
	st := Status{Messages: 4}
	v := NewStatusView(items)
	mustSend := func(mailbox string, want bool) {
		t.Helper()
		if _, changed := v.Update(mailbox, st); changed != want {
			t.Fatalf("Update(%q) changed = %v, want %v", mailbox, changed, want)
		}
	}
	mustSend("a", true)
	mustSend("a", false)
	v.Forget("a")
	mustSend("a", true)

	v.Rename("a", "b") // b inherits a's state; a is gone
	mustSend("b", false)
	mustSend("a", true)

	mustSend("INBOX", true)
	v.Rename("inbox", "c") // INBOX rename: both forgotten
	mustSend("INBOX", true)
	mustSend("c", true)

	v.Rename("b", "b") // no-op
	mustSend("b", false)

	v.Forget("never-seen") // harmless
}

func TestStatusViewApply(t *testing.T) {
	items := StatusItems{"MESSAGES"}
	st := Status{Messages: 1}
	const me = 42
	tests := []struct {
		name      string
		ev        event.Event
		remembers map[string]bool // after Apply
	}{
		{"delete", event.Event{Kind: event.MailboxDelete, Mailbox: "a"}, map[string]bool{"a": false, "a/x": true, "b": true}},
		{"rename with children", event.Event{Kind: event.MailboxRename, OldMailbox: "a", Mailbox: "n", Delimiter: "/"},
			map[string]bool{"a": false, "a/x": false, "n": true, "n/x": true, "b": true}},
		{"rename without delimiter", event.Event{Kind: event.MailboxRename, OldMailbox: "a", Mailbox: "n"},
			map[string]bool{"a": false, "a/x": true, "n": true}},
		{"own append elsewhere", event.Event{Kind: event.MessageAppend, Mailbox: "b", Origin: me}, map[string]bool{"a": true, "b": false}},
		{"own flag change", event.Event{Kind: event.FlagChange, Mailbox: "b", Origin: me}, map[string]bool{"b": false}},
		{"someone else's append", event.Event{Kind: event.MessageAppend, Mailbox: "b", Origin: 7}, map[string]bool{"b": true}},
		{"no origin", event.Event{Kind: event.MessageNew, Mailbox: "b"}, map[string]bool{"b": true}},
		// A created mailbox is remembered as new and empty: a value with a
		// message differs from it.
		{"own create", event.Event{Kind: event.MailboxCreate, Mailbox: "b", Origin: me}, map[string]bool{"a": true, "b": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewStatusView(items)
			for _, m := range []string{"a", "a/x", "b"} {
				v.Update(m, st)
			}
			v.Apply(tt.ev, me)
			for m, want := range tt.remembers {
				_, changed := v.Update(m, st)
				if remembered := !changed; remembered != want {
					t.Errorf("after Apply(%v): remembers %q = %v, want %v", tt.ev, m, remembered, want)
				}
			}
		})
	}

	// Session id 0 never matches an origin of 0.
	v := NewStatusView(items)
	v.Update("b", st)
	v.Apply(event.Event{Kind: event.MessageNew, Mailbox: "b"}, 0)
	if _, changed := v.Update("b", st); changed {
		t.Error("Apply with session 0 forgot a mailbox for an event without origin")
	}
}

func TestNewStatusViewUnknownItemPanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("NewStatusView accepted an unknown item")
		}
	}()
	NewStatusView(StatusItems{"MESSAGES", "HIGHESTMODSEQ"})
}

// TestStatusViewApplyListed: a session told of a rename as a deletion and
// a creation forgets the old names and takes the new one as a new, empty
// mailbox: its next value is told unless it is that.
func TestStatusViewApplyCreate(t *testing.T) {
	v := NewStatusView(StatusItems{StatusMessages, StatusUIDNext, StatusUnseen})
	v.Apply(event.Event{Kind: event.MailboxCreate, Mailbox: "new"}, me)
	if line, changed := v.Update("new", Status{UIDNext: 1}); changed {
		t.Errorf("a new, empty mailbox was told %q", line)
	}
	if _, changed := v.Update("new", Status{Messages: 1, UIDNext: 2, Unseen: 1}); !changed {
		t.Error("the first message of a new mailbox was not told")
	}
}

func TestStatusViewApplyListed(t *testing.T) {
	v := NewStatusView(StatusItems{StatusMessages, StatusUIDNext, StatusUnseen})
	v.Update("a", Status{Messages: 3, UIDNext: 4, Unseen: 1})
	v.Update("a/x", Status{Messages: 1, UIDNext: 2})
	v.Update("empty", Status{UIDNext: 1})
	v.ApplyListed(event.Event{Kind: event.MailboxRename, Mailbox: "b", OldMailbox: "a", Delimiter: "/"}, me)
	if _, changed := v.Update("b", Status{Messages: 3, UIDNext: 4, Unseen: 1}); !changed {
		t.Error("the renamed mailbox's messages were not told")
	}
	if _, changed := v.Update("a/x", Status{Messages: 1, UIDNext: 2}); !changed {
		t.Error("a child of the old name is still remembered")
	}
	v.ApplyListed(event.Event{Kind: event.MailboxRename, Mailbox: "still-empty", OldMailbox: "empty", Delimiter: "/"}, me)
	if line, changed := v.Update("still-empty", Status{UIDNext: 1}); changed {
		t.Errorf("an empty renamed mailbox was told %q", line)
	}
	v.ApplyListed(event.Event{Kind: event.MailboxDelete, Mailbox: "b"}, me)
	if _, changed := v.Update("b", Status{Messages: 3, UIDNext: 4, Unseen: 1}); !changed {
		t.Error("a deleted mailbox is still remembered")
	}
}

// TestOnlyFlagsChanged: a STATUS that differs from the last one sent in
// UNSEEN alone is a flag change; a first value, an equal one or one with
// another change is not.
func TestOnlyFlagsChanged(t *testing.T) {
	v := NewStatusView(StatusItems{StatusMessages, StatusUIDNext, StatusUnseen})
	st := Status{Messages: 2, UIDNext: 3, Unseen: 2}
	if v.OnlyFlagsChanged("A", st) {
		t.Error("nothing sent yet: a flag change")
	}
	v.Update("A", st)
	for _, tt := range []struct {
		st   Status
		want bool
	}{
		{st, false},
		{Status{Messages: 2, UIDNext: 3, Unseen: 1}, true},
		{Status{Messages: 2, UIDNext: 3, Unseen: 1, Recent: 5}, true}, // RECENT is not an item
		{Status{Messages: 3, UIDNext: 4, Unseen: 3}, false},
		{Status{Messages: 1, UIDNext: 3, Unseen: 1}, false},
	} {
		if got := v.OnlyFlagsChanged("A", tt.st); got != tt.want {
			t.Errorf("OnlyFlagsChanged(%+v) = %v, want %v", tt.st, got, tt.want)
		}
	}
}
