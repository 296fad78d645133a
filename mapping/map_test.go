// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/event"
)

const (
	me    = uint64(10) // the receiving session
	other = uint64(20) // another session of the same account
)

func ev(kind event.Kind, mailbox string, mod ...func(*event.Event)) event.Event {
	e := event.Event{Kind: kind, Account: "alice", Mailbox: mailbox, Delimiter: "/"}
	for _, m := range mod {
		m(&e)
	}
	return e
}

func origin(id uint64) func(*event.Event)  { return func(e *event.Event) { e.Origin = id } }
func attrs(a ...string) func(*event.Event) { return func(e *event.Event) { e.Attrs = a } }
func old(name string) func(*event.Event)   { return func(e *event.Event) { e.OldMailbox = name } }
func subscribed(s bool) func(*event.Event) { return func(e *event.Event) { e.Subscribed = s } }

func lines(ls ...string) [][]byte {
	out := make([][]byte, len(ls))
	for i, l := range ls {
		out[i] = []byte(l + "\r\n")
	}
	return out
}

// TestMapTable walks the mapping table of docs/notifications.md row by row, for a session of
// account alice that has INBOX selected, under the default policy.
func TestMapTable(t *testing.T) {
	p := DraftPolicy()
	fetch := p.FetchItems
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	tests := []struct {
		name string
		ev   event.Event
		want Plan
	}{
		// MessageNew / MessageAppend
		{"new in selected", ev(event.MessageNew, "INBOX"), Plan{Action: NeedFetchNew, Mailbox: "INBOX", Fetch: fetch}},
		{"new in selected, other case", ev(event.MessageNew, "inbox"), Plan{Action: NeedFetchNew, Mailbox: "inbox", Fetch: fetch}},
		{"append in selected by other session", ev(event.MessageAppend, "INBOX", origin(other)), Plan{Action: NeedFetchNew, Mailbox: "INBOX", Fetch: fetch}},
		{"append in selected by this session", ev(event.MessageAppend, "INBOX", origin(me)), Plan{Action: NeedFetchNew, Mailbox: "INBOX", Fetch: fetch}},
		{"new in other mailbox", ev(event.MessageNew, "Lists/go"), Plan{Action: NeedStatus, Mailbox: "Lists/go"}},
		{"append in other mailbox by other session", ev(event.MessageAppend, "Sent", origin(other)), Plan{Action: NeedStatus, Mailbox: "Sent"}},
		{"append in other mailbox by this session", ev(event.MessageAppend, "Sent", origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// MessageExpunge
		{"expunge in selected", ev(event.MessageExpunge, "INBOX", origin(other)), Plan{Action: SelectedHandledByStore, Reason: ReasonStore}},
		{"expunge in selected by this session", ev(event.MessageExpunge, "INBOX", origin(me)), Plan{Action: SelectedHandledByStore, Reason: ReasonStore}},
		{"expunge in other mailbox", ev(event.MessageExpunge, "Trash", origin(other)), Plan{Action: NeedStatus, Mailbox: "Trash"}},
		{"expunge in other mailbox by this session", ev(event.MessageExpunge, "Trash", origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// FlagChange
		{"flags in selected", ev(event.FlagChange, "INBOX", origin(other)), Plan{Action: SelectedHandledByStore, Reason: ReasonStore}},
		{"flags in selected by this session", ev(event.FlagChange, "INBOX", origin(me)), Plan{Action: SelectedHandledByStore, Reason: ReasonStore}},
		{"flags in other mailbox (UNSEEN configured)", ev(event.FlagChange, "Archive", origin(other)), Plan{Action: NeedStatus, Mailbox: "Archive"}},
		{"flags in other mailbox by this session", ev(event.FlagChange, "Archive", origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// MailboxCreate
		{"create", ev(event.MailboxCreate, "Projects/Neu", attrs(`\HasNoChildren`), origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\HasNoChildren) "/" "Projects/Neu"`)}},
		{"create without attrs, from SMTP/CLI", ev(event.MailboxCreate, "Entwürfe"),
			Plan{Action: WriteLines, Lines: lines(`* LIST () "/" "Entw&APw-rfe"`)}},
		{"create by this session", ev(event.MailboxCreate, "X", origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// MailboxDelete
		{"delete", ev(event.MailboxDelete, "Old", attrs(`\HasNoChildren`), origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\NonExistent) "/" "Old"`)}},
		{"delete of the selected mailbox", ev(event.MailboxDelete, "INBOX", origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\NonExistent) "/" INBOX`)}},
		{"delete by this session", ev(event.MailboxDelete, "Old", origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// MailboxRename
		{"rename", ev(event.MailboxRename, "new", old("old"), origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\NonExistent) "/" "old"`, `* LIST () "/" "new"`)}},
		{"rename with attrs", ev(event.MailboxRename, "Archiv/2024", old("Archive 2024"), attrs(`\HasNoChildren`)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\NonExistent) "/" "Archive 2024"`, `* LIST (\HasNoChildren) "/" "Archiv/2024"`)}},
		{"rename of INBOX (INBOX stays)", ev(event.MailboxRename, "Old mail", old("INBOX"), origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST () "/" "Old mail"`)}},
		{"rename by this session", ev(event.MailboxRename, "new", old("old"), origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},

		// SubscriptionChange
		{"subscribe", ev(event.SubscriptionChange, "Lists", subscribed(true), attrs(`\HasChildren`), origin(other)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\HasChildren \Subscribed) "/" "Lists"`)}},
		{"unsubscribe", ev(event.SubscriptionChange, "Lists", subscribed(false), attrs(`\HasChildren`, `\Subscribed`)),
			Plan{Action: WriteLines, Lines: lines(`* LIST (\HasChildren) "/" "Lists"`)}},
		{"unsubscribe, no attrs, NIL delimiter", ev(event.SubscriptionChange, "flat", func(e *event.Event) { e.Delimiter = "" }),
			Plan{Action: WriteLines, Lines: lines(`* LIST () NIL "flat"`)}},
		{"subscribe by this session", ev(event.SubscriptionChange, "Lists", subscribed(true), origin(me)), Plan{Action: Nothing, Reason: ReasonOwnChange}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Map(p, tt.ev, view)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Map(%v)\n got %s\nwant %s", tt.ev, fmtPlan(got), fmtPlan(tt.want))
			}
			for _, l := range got.Lines {
				strict(t, l, tt.ev.Kind != event.MailboxRename)
			}
		})
	}
}

func fmtPlan(p Plan) string {
	var ls []string
	for _, l := range p.Lines {
		ls = append(ls, strconv.Quote(string(l)))
	}
	return fmt.Sprintf("%v reason=%q mailbox=%q fetch=%v lines=[%s]", p.Action, p.Reason, p.Mailbox, p.Fetch, strings.Join(ls, " "))
}

// TestMapAccountIsolation: another account's events never reach a session,
// whatever they are about.
func TestMapAccountIsolation(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	for _, k := range event.Kinds() {
		e := ev(k, "INBOX", func(e *event.Event) { e.Account = "bob" })
		if k == event.MailboxRename {
			e.OldMailbox = "x"
		}
		// Even with bob's session id colliding with ours.
		e.Origin = me
		if got := Map(DraftPolicy(), e, view); got.Action != Nothing || got.Reason != ReasonOtherAccount {
			t.Errorf("%v of account bob → %s, want Nothing (other account)", k, fmtPlan(got))
		}
		// Account names are compared exactly (maddy normalises them).
		e.Account = "Alice"
		if got := Map(DraftPolicy(), e, view); got.Action != Nothing {
			t.Errorf("%v of account Alice → %s, want Nothing", k, fmtPlan(got))
		}
	}
}

// TestMapDisabledKinds: a kind missing from Policy.Events maps to Nothing,
// for the selected mailbox as for others; the remaining kinds are unaffected.
func TestMapDisabledKinds(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	for _, disabled := range event.Kinds() {
		p := DraftPolicy()
		p.Events = NewKindSet()
		for _, k := range event.Kinds() {
			if k != disabled {
				p.Events |= NewKindSet(k)
			}
		}
		for _, k := range event.Kinds() {
			for _, box := range []string{"INBOX", "Other"} {
				e := ev(k, box)
				if k == event.MailboxRename {
					e.OldMailbox = "x"
				}
				got := Map(p, e, view)
				if k == disabled && (got.Action != Nothing || got.Reason != ReasonKindDisabled) {
					t.Errorf("%v disabled, event in %s → %s", k, box, fmtPlan(got))
				}
				if k != disabled && got.Action == Nothing {
					t.Errorf("%v enabled (only %v disabled), event in %s → %s", k, disabled, box, fmtPlan(got))
				}
			}
		}
	}
	if got := Map(Policy{}, ev(event.MessageNew, "Other"), view); got.Reason != ReasonKindDisabled {
		t.Errorf("zero Policy: %s, want kind disabled", fmtPlan(got))
	}
}

func TestMapStatusScope(t *testing.T) {
	base := SessionView{ID: me, Account: "alice", Selected: "Work", Idling: true}
	tests := []struct {
		scope      MailboxScope
		mailbox    string
		subscribed bool
		want       Plan
	}{
		{AllMailboxes, "Lists", false, Plan{Action: NeedStatus, Mailbox: "Lists"}},
		{AllMailboxes, "INBOX", false, Plan{Action: NeedStatus, Mailbox: "INBOX"}},
		{SubscribedMailboxes, "Lists", true, Plan{Action: NeedStatus, Mailbox: "Lists"}},
		{SubscribedMailboxes, "Lists", false, Plan{Action: Nothing, Reason: ReasonNotSubscribed}},
		{Inboxes, "INBOX", false, Plan{Action: NeedStatus, Mailbox: "INBOX"}},
		{Inboxes, "Inbox", false, Plan{Action: NeedStatus, Mailbox: "Inbox"}},
		{Inboxes, "INBOX/Sub", false, Plan{Action: Nothing, Reason: ReasonNotInbox}},
		{Inboxes, "Lists", true, Plan{Action: Nothing, Reason: ReasonNotInbox}},
		{NoMailboxes, "INBOX", true, Plan{Action: Nothing, Reason: ReasonScopeNone}},
	}
	for _, tt := range tests {
		p := DraftPolicy()
		p.StatusMailboxes = tt.scope
		view := base
		view.Subscribed = tt.subscribed
		for _, k := range []event.Kind{event.MessageNew, event.MessageAppend, event.MessageExpunge, event.FlagChange} {
			got := Map(p, ev(k, tt.mailbox, origin(other)), view)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("scope %v, %v in %q (subscribed=%v): %s, want %s", tt.scope, k, tt.mailbox, tt.subscribed, fmtPlan(got), fmtPlan(tt.want))
			}
		}
		// The scope never affects the selected mailbox nor LIST.
		if got := Map(p, ev(event.MessageExpunge, "Work"), view); got.Action != SelectedHandledByStore {
			t.Errorf("scope %v: expunge in selected → %s", tt.scope, fmtPlan(got))
		}
		if got := Map(p, ev(event.MailboxCreate, tt.mailbox), view); got.Action != WriteLines {
			t.Errorf("scope %v: create → %s", tt.scope, fmtPlan(got))
		}
	}
}

func TestMapFlagChangeNeedsFlagDependentItem(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	p := DraftPolicy()
	p.StatusItems = StatusItems{"MESSAGES", "UIDNEXT", "RECENT", "UIDVALIDITY"}
	if got := Map(p, ev(event.FlagChange, "Other"), view); got.Action != Nothing || got.Reason != ReasonNoFlagItems {
		t.Errorf("FlagChange without UNSEEN: %s", fmtPlan(got))
	}
	// The other message events still need STATUS.
	if got := Map(p, ev(event.MessageExpunge, "Other"), view); got.Action != NeedStatus {
		t.Errorf("MessageExpunge without UNSEEN: %s", fmtPlan(got))
	}
	p.StatusItems = StatusItems{"UNSEEN", "MESSAGES"}
	if got := Map(p, ev(event.FlagChange, "Other"), view); got.Action != NeedStatus {
		t.Errorf("FlagChange with UNSEEN: %s", fmtPlan(got))
	}
}

func TestMapNoFetchItems(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	p := DraftPolicy()
	p.FetchItems = nil
	for _, k := range []event.Kind{event.MessageNew, event.MessageAppend} {
		if got := Map(p, ev(k, "INBOX"), view); got.Action != SelectedHandledByStore || got.Reason != ReasonNoFetchItems {
			t.Errorf("%v in selected without FETCH items: %s", k, fmtPlan(got))
		}
	}
}

func TestMapNoSelectedMailbox(t *testing.T) {
	// Not selected (e.g. authenticated state): every message event is about
	// "another mailbox".
	view := SessionView{ID: me, Account: "alice", Idling: true}
	for _, k := range []event.Kind{event.MessageNew, event.MessageAppend, event.MessageExpunge, event.FlagChange} {
		if got := Map(DraftPolicy(), ev(k, "INBOX"), view); got.Action != NeedStatus {
			t.Errorf("%v, nothing selected: %s", k, fmtPlan(got))
		}
	}
}

func TestMapOriginZero(t *testing.T) {
	// A session id of 0 must not treat origin-less events as its own.
	view := SessionView{ID: 0, Account: "alice", Selected: "INBOX", Idling: true}
	if got := Map(DraftPolicy(), ev(event.MailboxCreate, "X"), view); got.Action != WriteLines {
		t.Errorf("session 0, create without origin: %s", fmtPlan(got))
	}
	if got := Map(DraftPolicy(), ev(event.MessageNew, "X"), view); got.Action != NeedStatus {
		t.Errorf("session 0, new without origin: %s", fmtPlan(got))
	}
}

func TestMapInvalidEvent(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	bad := []event.Event{
		{},
		{Kind: event.MessageNew, Account: "alice"},
		{Kind: event.MailboxRename, Account: "alice", Mailbox: "new"},
		{Kind: event.MailboxCreate, Account: "alice", Mailbox: "a\r\nb"},
		{Kind: 99, Account: "alice", Mailbox: "a"},
	}
	for _, e := range bad {
		got := Map(DraftPolicy(), e, view)
		if got.Action != Nothing || !strings.HasPrefix(got.Reason, ReasonInvalidEvent) {
			t.Errorf("Map(%v) = %s, want Nothing (invalid event)", e, fmtPlan(got))
		}
	}
}

func TestMapDoesNotModifyEvent(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: true}
	e := ev(event.SubscriptionChange, "L", attrs(`\Subscribed`, `\HasNoChildren`), subscribed(false))
	before := e.Clone()
	Map(DraftPolicy(), e, view)
	if !reflect.DeepEqual(e, before) {
		t.Fatalf("Map modified the event: %+v → %+v", before, e)
	}
}

func TestKindSet(t *testing.T) {
	s, err := ParseKinds([]string{"MessageNew", "mailboxcreate"})
	if err != nil {
		t.Fatal(err)
	}
	if s != NewKindSet(event.MessageNew, event.MailboxCreate) || s.String() != "MessageNew MailboxCreate" {
		t.Errorf("ParseKinds = %v (%q)", uint32(s), s)
	}
	if !s.Has(event.MessageNew) || s.Has(event.FlagChange) || s.Has(0) || s.Has(200) {
		t.Error("Has is wrong")
	}
	if _, err := ParseKinds([]string{"MessageNew", "FlagsSet"}); err == nil {
		t.Error("ParseKinds accepted FlagsSet")
	}
	if got := AllKinds().Kinds(); !reflect.DeepEqual(got, event.Kinds()) {
		t.Errorf("AllKinds().Kinds() = %v", got)
	}
	if NewKindSet().String() != "" {
		t.Error("empty set String() not empty")
	}
}

func TestMailboxScope(t *testing.T) {
	for _, s := range []MailboxScope{AllMailboxes, SubscribedMailboxes, Inboxes, NoMailboxes} {
		got, err := ParseMailboxScope(strings.ToUpper(s.String()))
		if err != nil || got != s {
			t.Errorf("ParseMailboxScope(%q) = %v, %v", strings.ToUpper(s.String()), got, err)
		}
	}
	if _, err := ParseMailboxScope("personal"); err == nil {
		t.Error("ParseMailboxScope accepted personal")
	}
	if MailboxScope(9).String() != "MailboxScope(9)" {
		t.Error("invalid scope String()")
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("DefaultPolicy().Validate() = %v", err)
	}
	if !reflect.DeepEqual(DefaultPolicy().Events.Kinds(), event.Kinds()) {
		t.Error("DefaultPolicy does not enable every kind")
	}
	bad := []func(*Policy){
		func(p *Policy) { p.StatusItems = nil },
		func(p *Policy) { p.StatusItems = StatusItems{"UNSEEN"} },
		func(p *Policy) { p.FetchItems = FetchItems{"BODY[]"} },
		func(p *Policy) { p.FetchItems = FetchItems{"UID", "FLAGS"} },
		func(p *Policy) { p.StatusMailboxes = 7 },
	}
	for i, mod := range bad {
		p := DefaultPolicy()
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("bad policy %d validated", i)
		}
	}
	p := DefaultPolicy()
	p.StatusMailboxes, p.StatusItems = NoMailboxes, nil
	if err := p.Validate(); err != nil {
		t.Errorf("scope none without items: %v", err)
	}
	if p.NeedsSubscription() {
		t.Error("NeedsSubscription under none")
	}
	p.StatusMailboxes = SubscribedMailboxes
	if !p.NeedsSubscription() {
		t.Error("!NeedsSubscription under subscribed")
	}
}

func TestActionString(t *testing.T) {
	want := []string{"Nothing", "SelectedHandledByStore", "NeedStatus", "NeedFetchNew", "WriteLines", "Action(9)"}
	for i, a := range []Action{Nothing, SelectedHandledByStore, NeedStatus, NeedFetchNew, WriteLines, 9} {
		if a.String() != want[i] {
			t.Errorf("Action(%d).String() = %q, want %q", a, a.String(), want[i])
		}
	}
}

// TestMapPlainClients: what a session without NOTIFY is told under each
// plain_clients value, for every row that is not the store's.
func TestMapPlainClients(t *testing.T) {
	evs := []event.Event{
		ev(event.MessageNew, "Archive", origin(other)),
		ev(event.FlagChange, "Archive", origin(other)),
		ev(event.MessageExpunge, "Archive", origin(other)),
		ev(event.MailboxCreate, "New", origin(other)),
		ev(event.MailboxDelete, "Old", origin(other)),
		ev(event.MailboxRename, "new", old("old"), origin(other)),
		ev(event.SubscriptionChange, "Lists", subscribed(true), origin(other)),
	}
	for _, tc := range []struct {
		plain  PlainClients
		idling bool
		want   Plan
	}{
		{PlainSelected, true, Plan{Action: Nothing, Reason: ReasonPlainSelected}},
		{PlainSelected, false, Plan{Action: Nothing, Reason: ReasonPlainSelected}},
		{PlainNone, true, Plan{Action: Nothing, Reason: ReasonPlainNone}},
		{PlainDraft, false, Plan{Action: Defer}},
	} {
		p := DefaultPolicy()
		p.Plain = tc.plain
		view := SessionView{ID: me, Account: "alice", Selected: "INBOX", Idling: tc.idling}
		for _, e := range evs {
			if got := Map(p, e, view); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%v idling=%v: Map(%v) = %s, want %s", tc.plain, tc.idling, e, fmtPlan(got), fmtPlan(tc.want))
			}
		}
	}
	// The selected mailbox's new messages: the module's FETCH unless none.
	for _, tc := range []struct {
		plain PlainClients
		want  Plan
	}{
		{PlainSelected, Plan{Action: NeedFetchNew, Mailbox: "INBOX", Fetch: DefaultPolicy().FetchItems}},
		{PlainDraft, Plan{Action: NeedFetchNew, Mailbox: "INBOX", Fetch: DefaultPolicy().FetchItems}},
		{PlainNone, Plan{Action: SelectedHandledByStore, Reason: ReasonPlainNone}},
	} {
		p := DefaultPolicy()
		p.Plain = tc.plain
		view := SessionView{ID: me, Account: "alice", Selected: "INBOX"}
		if got := Map(p, ev(event.MessageAppend, "INBOX", origin(other)), view); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: APPEND to the selected mailbox: %s, want %s", tc.plain, fmtPlan(got), fmtPlan(tc.want))
		}
	}
	if DefaultPolicy().Plain != PlainSelected {
		t.Error("the default for plain clients is not selected")
	}
	for name, v := range PlainClientsValues() {
		if v.String() != name {
			t.Errorf("PlainClientsValues()[%q].String() = %q", name, v.String())
		}
	}
}

// TestMapAnyTime: a session told at any time (what NOTIFY sessions get)
// is told at NOOP as in IDLE, and a rename carries OLDNAME.
func TestMapAnyTime(t *testing.T) {
	view := SessionView{ID: me, Account: "alice", Selected: "INBOX"}
	if got, want := Map(AnyTimePolicy(), ev(event.MailboxRename, "new", old("old"), origin(other)), view),
		(Plan{Action: WriteLines, Lines: lines(`* LIST () "/" "new" ("OLDNAME" ("old"))`)}); !reflect.DeepEqual(got, want) {
		t.Errorf("rename: %s, want %s", fmtPlan(got), fmtPlan(want))
	}
	if got := Map(AnyTimePolicy(), ev(event.MessageNew, "Archive", origin(other)), view); got.Action != NeedStatus {
		t.Errorf("new message in another mailbox, not idling: %s", fmtPlan(got))
	}
	notify := SessionView{ID: me, Account: "alice", Notify: &Interest{Groups: []EventGroup{
		{Filter: Filter{Kind: FilterPersonal}, Events: NewNotifyEvents(NotifyMailboxName)}}}}
	for _, tt := range []struct {
		ev   event.Event
		want string
	}{
		{ev(event.MailboxCreate, "new", origin(other), subscribed(true), attrs(`\HasNoChildren`)), `* LIST (\HasNoChildren \Subscribed) "/" "new"`},
		{ev(event.MailboxCreate, "new", origin(other), attrs(`\HasNoChildren`)), `* LIST (\HasNoChildren) "/" "new"`},
		{ev(event.MailboxRename, "new", old("old"), origin(other), subscribed(true)), `* LIST (\Subscribed) "/" "new" ("OLDNAME" ("old"))`},
	} {
		if got, want := Map(AnyTimePolicy(), tt.ev, notify), (Plan{Action: WriteLines, Lines: lines(tt.want)}); !reflect.DeepEqual(got, want) {
			t.Errorf("NOTIFY %v: %s, want %s", tt.ev, fmtPlan(got), fmtPlan(want))
		}
	}
	if _, ok := PlainClientsValues()["any-time"]; ok {
		t.Error("AnyTime is a configuration value")
	}
}

// TestWantsFlagChange: a plain session is told flag changes as the policy
// says; a NOTIFY session when its deciding group names FlagChange.
func TestWantsFlagChange(t *testing.T) {
	wants := func(view SessionView, mailbox string) bool {
		view.Account = "alice"
		return Map(AnyTimePolicy(), ev(event.FlagChange, mailbox, origin(other)), view).Action == NeedStatus
	}
	if !wants(SessionView{ID: me}, "A") {
		t.Error("plain session")
	}
	in := &Interest{Groups: []EventGroup{
		{Filter: Filter{Kind: FilterMailboxes, Mailboxes: []string{"A"}}, Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge)},
		{Filter: Filter{Kind: FilterPersonal}, Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge, NotifyFlagChange)},
	}}
	view := SessionView{ID: me, Notify: in}
	if wants(view, "A") {
		t.Error("A: its group lacks FlagChange")
	}
	if !wants(view, "B") {
		t.Error("B: personal names FlagChange")
	}
}
