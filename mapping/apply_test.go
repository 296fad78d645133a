// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"reflect"
	"testing"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
)

// statusSteps runs MapStatus over a sequence of values of one mailbox for
// one session and checks the exact line (or none) each gives.
type statusStep struct {
	what     string
	c        StatusChange
	want     string // "" for no line
	deferred bool
}

func runStatusSteps(t *testing.T, p Policy, view SessionView, steps []statusStep) {
	t.Helper()
	sv := NewStatusView(p.StatusItems)
	for _, st := range steps {
		line, deferred := MapStatus(p, view, sv, st.c)
		if string(line) != st.want || deferred != st.deferred {
			t.Errorf("%s: MapStatus = %q, deferred %v; want %q, deferred %v", st.what, line, deferred, st.want, st.deferred)
		}
		if line != nil {
			strict(t, line, view.Notify == nil)
		}
	}
}

// TestMapStatusPlain: a STATUS value is told when it differs from what the
// client was last told, never twice; the session's own change is not told,
// and the next value is told whatever it is; the selected mailbox's value is
// recorded, not told.
func TestMapStatusPlain(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	v := func(m, next, unseen uint32) Status { return Status{Messages: m, UIDNext: next, Unseen: unseen} }
	runStatusSteps(t, DraftPolicy(), view, []statusStep{
		{"first value", StatusChange{Mailbox: "Archive", Value: v(1, 2, 1)}, "* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n", false},
		{"the same again", StatusChange{Mailbox: "Archive", Value: v(1, 2, 1)}, "", false},
		{"only RECENT differs (not an item)", StatusChange{Mailbox: "Archive", Value: Status{Messages: 1, UIDNext: 2, Unseen: 1, Recent: 1}}, "", false},
		{"own change", StatusChange{Mailbox: "Archive", Value: v(2, 3, 2), Own: true}, "", false},
		{"the own change's value, not own", StatusChange{Mailbox: "Archive", Value: v(2, 3, 2)}, "* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n", false},
		{"flags only", StatusChange{Mailbox: "Archive", Value: v(2, 3, 0)}, "* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 0)\r\n", false},
		{"the selected mailbox", StatusChange{Mailbox: "inbox", Value: v(5, 6, 5)}, "", false},
		{"a name to encode", StatusChange{Mailbox: "Entwürfe", Value: v(0, 1, 0)}, "* STATUS \"Entw&APw-rfe\" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)\r\n", false},
	})
	// The selected mailbox's value was recorded: told there, it is not
	// told again once the session selects another mailbox.
	sv := NewStatusView(DraftPolicy().StatusItems)
	MapStatus(DraftPolicy(), view, sv, StatusChange{Mailbox: "INBOX", Value: v(5, 6, 5)})
	view.Selected = "Archive"
	if line, _ := MapStatus(DraftPolicy(), view, sv, StatusChange{Mailbox: "INBOX", Value: v(5, 6, 5)}); line != nil {
		t.Errorf("INBOX's recorded value told again: %q", line)
	}
}

// TestMapStatusWaitsForIdle: under plain_clients draft a value waits for
// IDLE (nothing recorded), under selected and none it is never told.
func TestMapStatusWaitsForIdle(t *testing.T) {
	c := StatusChange{Mailbox: "Archive", Value: Status{Messages: 1, UIDNext: 2, Unseen: 1}}
	want := "* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX"}
	runStatusSteps(t, DraftPolicy(), view, []statusStep{
		{"not idling", c, "", true},
		{"not idling, again", c, "", true},
	})
	view.Idling = true
	runStatusSteps(t, DraftPolicy(), view, []statusStep{{"idling", c, want, false}})
	for _, plain := range []PlainClients{PlainSelected, PlainNone} {
		p := DefaultPolicy()
		p.Plain = plain
		runStatusSteps(t, p, view, []statusStep{{plain.String(), c, "", false}})
	}
}

// TestMapStatusValueScope: the policy's status_mailboxes and a NOTIFY client's
// filters decide; a flag change a NOTIFY client did not ask for is not told
// and not recorded, so the next value that differs in more is told whole.
func TestMapStatusValueScope(t *testing.T) {
	v := Status{Messages: 1, UIDNext: 2, Unseen: 1}
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	p := DraftPolicy()
	p.StatusMailboxes = SubscribedMailboxes
	runStatusSteps(t, p, view, []statusStep{
		{"not subscribed", StatusChange{Mailbox: "Lists", Value: v}, "", false},
		{"subscribed", StatusChange{Mailbox: "Lists", Value: v, Subscribed: true}, "* STATUS \"Lists\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n", false},
	})
	view.Notify = &Interest{Groups: []EventGroup{
		{Filter: Filter{Kind: FilterMailboxes, Mailboxes: []string{"Lists"}}, Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge)},
	}}
	runStatusSteps(t, DraftPolicy(), view, []statusStep{
		{"not asked", StatusChange{Mailbox: "Archive", Value: v}, "", false},
		{"asked", StatusChange{Mailbox: "Lists", Value: v}, "* STATUS \"Lists\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n", false},
		{"flags only, FlagChange not asked", StatusChange{Mailbox: "Lists", Value: Status{Messages: 1, UIDNext: 2}}, "", false},
		{"then a new message", StatusChange{Mailbox: "Lists", Value: Status{Messages: 2, UIDNext: 3, Unseen: 1}}, "* STATUS \"Lists\" (MESSAGES 2 UIDNEXT 3 UNSEEN 1)\r\n", false},
	})
}

// TestMapNewMessages: the items of the module's FETCH of new messages in
// the selected mailbox, for plain and NOTIFY sessions.
func TestMapNewMessages(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX"}
	if got := MapNewMessages(DefaultPolicy(), view); !reflect.DeepEqual(got, FetchItems{"FLAGS", "BODYSTRUCTURE"}) {
		t.Errorf("plain: %v", got)
	}
	p := DefaultPolicy()
	p.Plain = PlainNone
	if got := MapNewMessages(p, view); got != nil {
		t.Errorf("plain_clients none: %v", got)
	}
	p = DefaultPolicy()
	p.Events = NewKindSet(event.MessageAppend)
	if got := MapNewMessages(p, view); !reflect.DeepEqual(got, FetchItems{"FLAGS", "BODYSTRUCTURE"}) {
		t.Errorf("MessageAppend alone: %v", got)
	}
	p.Events = NewKindSet(event.MailboxCreate)
	if got := MapNewMessages(p, view); got != nil {
		t.Errorf("no message event: %v", got)
	}
	if got := MapNewMessages(DefaultPolicy(), SessionView{ID: me, Account: "alice"}); got != nil {
		t.Errorf("nothing selected: %v", got)
	}
	view.Notify = &Interest{Groups: []EventGroup{{Filter: Filter{Kind: FilterSelected},
		Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge), FetchAtts: []imap.FetchItem{imap.FetchUid, imap.FetchEnvelope}}}}
	if got := MapNewMessages(DefaultPolicy(), view); !reflect.DeepEqual(got, FetchItems{"ENVELOPE"}) {
		t.Errorf("NOTIFY with (UID ENVELOPE): %v", got)
	}
	view.Notify = &Interest{Groups: []EventGroup{{Filter: Filter{Kind: FilterSelected},
		Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge)}}}
	if got := MapNewMessages(DefaultPolicy(), view); got != nil {
		t.Errorf("NOTIFY without a fetch-att list: %v", got)
	}
}

// TestApplyEvent: a plain client told of another session's rename as a
// deletion and a creation takes the new name for new and empty; one told
// with OLDNAME keeps what it knew.
func TestApplyEvent(t *testing.T) {
	v := Status{Messages: 3, UIDNext: 4, Unseen: 1}
	rename := ev(event.MailboxRename, "New", old("Old"), origin(other))
	for _, tc := range []struct {
		name string
		p    Policy
		view SessionView
		want string
	}{
		{"plain draft", DraftPolicy(), SessionView{ID: me, Account: "alice"}, "* STATUS \"New\" (MESSAGES 3 UIDNEXT 4 UNSEEN 1)\r\n"},
		{"NOTIFY", DraftPolicy(), SessionView{ID: me, Account: "alice", Notify: &Interest{Groups: []EventGroup{
			{Filter: Filter{Kind: FilterPersonal}, Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge, NotifyMailboxName)}}}}, ""},
	} {
		sv := NewStatusView(tc.p.StatusItems)
		sv.Update("Old", v)
		ApplyEvent(tc.p, tc.view, sv, rename)
		tc.view.Idling = true
		line, _ := MapStatus(tc.p, tc.view, sv, StatusChange{Mailbox: "New", Value: v})
		if string(line) != tc.want {
			t.Errorf("%s: the renamed mailbox's value: %q, want %q", tc.name, line, tc.want)
		}
	}
	if TellsNow(DraftPolicy(), SessionView{}) || !TellsNow(DraftPolicy(), SessionView{Idling: true}) ||
		!TellsNow(DefaultPolicy(), SessionView{Notify: &Interest{}}) || TellsNow(DefaultPolicy(), SessionView{Idling: true}) {
		t.Error("TellsNow")
	}
}
