// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"errors"
	"reflect"
	"testing"

	"github.com/emersion/go-imap"
	"github.com/maddy-notify/maddy-notify/event"
)

func TestNotifyEventNames(t *testing.T) {
	for e := NotifyEvent(1); e <= maxNotifyEvent; e++ {
		for _, s := range []string{e.String(), lower(e.String())} {
			if got, ok := ParseNotifyEvent(s); !ok || got != e {
				t.Errorf("ParseNotifyEvent(%q) = %v, %v; want %v", s, got, ok, e)
			}
		}
	}
	if _, ok := ParseNotifyEvent("MessageAppend"); ok {
		t.Error("MessageAppend is an RFC 5423 event, not an RFC 5465 one")
	}
	if got := SupportedNotifyEvents().String(); got != "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange" {
		t.Errorf("SupportedNotifyEvents() = %q", got)
	}
	for k := FilterKind(1); k <= maxFilterKind; k++ {
		if got, ok := ParseFilterKind(upper(k.String())); !ok || got != k {
			t.Errorf("ParseFilterKind(%q) = %v, %v", upper(k.String()), got, ok)
		}
	}
	want := map[event.Kind]NotifyEvent{
		event.MessageNew: NotifyMessageNew, event.MessageAppend: NotifyMessageNew,
		event.MessageExpunge: NotifyMessageExpunge, event.FlagChange: NotifyFlagChange,
		event.MailboxCreate: NotifyMailboxName, event.MailboxDelete: NotifyMailboxName, event.MailboxRename: NotifyMailboxName,
		event.SubscriptionChange: NotifySubscriptionChange,
	}
	for _, k := range event.Kinds() {
		if got := NotifyEventOf(k); got != want[k] {
			t.Errorf("NotifyEventOf(%v) = %v, want %v", k, got, want[k])
		}
	}
	if len(want) != len(event.Kinds()) {
		t.Errorf("a new event kind needs its RFC 5465 event in NotifyEventOf")
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}

var (
	nMsg  = NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge)
	nAll  = NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge, NotifyFlagChange)
	nName = NewNotifyEvents(NotifyMailboxName)
	nSub  = NewNotifyEvents(NotifySubscriptionChange)
)

func grp(kind FilterKind, events NotifyEvents, mailboxes ...string) EventGroup {
	return EventGroup{Filter: Filter{Kind: kind, Mailboxes: mailboxes}, Events: events}
}

func box(name string) MailboxFacts { return MailboxFacts{Name: name, Delimiter: "/"} }

func sel(name string) MailboxFacts {
	f := box(name)
	f.Selected = true
	return f
}

func subd(name string) MailboxFacts {
	f := box(name)
	f.Subscribed = true
	return f
}

// TestMatch: the first group whose filter matches the mailbox decides.
func TestMatch(t *testing.T) {
	fetch := []imap.FetchItem{"UID", "BODY.PEEK[HEADER]"}
	in := Interest{Status: true, Groups: []EventGroup{
		{Filter: Filter{Kind: FilterSelectedDelayed}, Events: nAll, FetchAtts: fetch},
		grp(FilterMailboxes, 0, "Spam", "Lists/noisy"),
		grp(FilterSubtree, nMsg|nName, "Lists", "INBOX"),
		grp(FilterSubscribed, nAll),
		grp(FilterPersonal, nName|nSub),
	}}
	if err := in.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		e    NotifyEvent
		f    MailboxFacts
		want Match
	}{
		{"new in selected", NotifyMessageNew, sel("Lists/go"), Match{Group: 0, Wanted: true, Fetch: fetch}},
		{"expunge in selected is delayed", NotifyMessageExpunge, sel("Lists/go"), Match{Group: 0, Wanted: true, Delayed: true}},
		{"flags in selected", NotifyFlagChange, sel("Spam"), Match{Group: 0, Wanted: true}},
		{"annotation in selected not asked", NotifyAnnotationChange, sel("Spam"), Match{Group: 0}},
		{"rename of selected: other filters", NotifyMailboxName, sel("Lists/go"), Match{Group: 2, Wanted: true}},
		{"NONE silences later groups", NotifyMailboxName, box("Spam"), Match{Group: 1}},
		{"NONE before a subtree that matches too", NotifyMessageNew, box("Lists/noisy"), Match{Group: 1}},
		{"subtree root", NotifyMessageNew, box("Lists"), Match{Group: 2, Wanted: true, Status: true}},
		{"below subtree", NotifyMessageExpunge, box("Lists/go/dev"), Match{Group: 2, Wanted: true, Status: true}},
		{"below INBOX subtree", NotifyMessageNew, box("INBOX/work"), Match{Group: 2, Wanted: true, Status: true}},
		{"prefix is not below", NotifyMessageNew, subd("Listserv"), Match{Group: 3, Wanted: true, Status: true}},
		{"first match decides: subtree lacks FlagChange", NotifyFlagChange, subd("Lists/go"), Match{Group: 2}},
		{"subscribed", NotifyFlagChange, subd("Archive"), Match{Group: 3, Wanted: true, Status: true}},
		{"subscribed lacks SubscriptionChange", NotifySubscriptionChange, subd("Archive"), Match{Group: 3}},
		{"an unsubscription matches subscribed", NotifySubscriptionChange, box("Archive"), Match{Group: 3}},
		{"personal", NotifyMailboxName, box("Archive"), Match{Group: 4, Wanted: true}},
		{"personal lacks messages", NotifyMessageNew, box("Archive"), Match{Group: 4}},
		{"invalid event", 0, box("Archive"), Match{Group: -1}},
	}
	for _, tt := range tests {
		if got := in.Match(tt.e, tt.f); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Match(%v, %+v) = %+v, want %+v", tt.name, tt.e, tt.f, got, tt.want)
		}
	}
	if !in.NeedsSubscription() {
		t.Error("NeedsSubscription false with a subscribed filter")
	}
	if in.Wants(event.MailboxCreate, box("Spam")) || !in.Wants(event.MailboxDelete, box("Lists/x")) || !in.Wants(event.MessageAppend, box("Lists")) {
		t.Error("Wants does not follow Match")
	}
}

func TestMatchSelected(t *testing.T) {
	// Without a selected group nothing is wanted for the selected mailbox
	// (RFC 5465 section 3: as "selected NONE"), even though personal
	// matches every other mailbox.
	in := Interest{Groups: []EventGroup{grp(FilterPersonal, nAll|nName)}}
	if m := in.Match(NotifyMessageNew, sel("INBOX")); m.Group != -1 || m.Wanted {
		t.Errorf("message event in selected mailbox matched %+v", m)
	}
	if m := in.Match(NotifyMessageNew, box("INBOX")); !m.Wanted || !m.Status {
		t.Errorf("message event in INBOX when not selected: %+v", m)
	}
	if m := in.Match(NotifyMailboxName, sel("INBOX")); !m.Wanted || m.Status {
		t.Errorf("mailbox event about the selected mailbox: %+v", m)
	}
	// selected matches only the selected mailbox; immediate expunges.
	in = Interest{Groups: []EventGroup{grp(FilterSelected, nMsg)}}
	if m := in.Match(NotifyMessageExpunge, sel("INBOX")); !m.Wanted || m.Delayed || m.Status || m.Fetch != nil {
		t.Errorf("selected expunge: %+v", m)
	}
	if m := in.Match(NotifyMessageNew, box("INBOX")); m.Group != -1 {
		t.Errorf("selected matched a mailbox that is not selected: %+v", m)
	}
	// "inboxes" is "personal" (RFC 5465 section 6.3: maddy cannot tell
	// where an MDA delivers).
	in = Interest{Groups: []EventGroup{grp(FilterInboxes, nMsg)}}
	for _, name := range []string{"INBOX", "Junk", "Lists/go"} {
		if !in.Wants(event.MessageNew, box(name)) {
			t.Errorf("inboxes does not match %s", name)
		}
	}
	// Subscribing and unsubscribing are both told under subscribed.
	in = Interest{Groups: []EventGroup{grp(FilterSubscribed, nSub|nName)}}
	if !in.Wants(event.SubscriptionChange, box("Old")) || !in.Wants(event.SubscriptionChange, subd("New")) {
		t.Error("a subscription change not told under subscribed")
	}
	if in.Wants(event.MailboxCreate, box("Unsubscribed")) || !in.Wants(event.MailboxDelete, subd("Was")) {
		t.Error("subscribed filter and MailboxName")
	}
	// INBOX in any case.
	in = Interest{Groups: []EventGroup{grp(FilterMailboxes, nMsg, "INBOX"), grp(FilterSubtree, nName, "INBOX")}}
	if !in.Wants(event.MessageNew, box("inbox")) || !in.Wants(event.MailboxCreate, box("Inbox/sub")) {
		t.Error("INBOX compared with regard to case")
	}
	// A flat store: subtree is the mailbox itself.
	in = Interest{Groups: []EventGroup{grp(FilterSubtree, nMsg, "Lists")}}
	if in.Wants(event.MessageNew, MailboxFacts{Name: "Lists/go"}) || !in.Wants(event.MessageNew, MailboxFacts{Name: "Lists"}) {
		t.Error("subtree without a delimiter")
	}
	if in.NeedsSubscription() {
		t.Error("NeedsSubscription without a subscribed filter")
	}
}

func TestInitialStatus(t *testing.T) {
	in := Interest{Status: true, Groups: []EventGroup{
		grp(FilterSelected, nMsg),
		grp(FilterMailboxes, nName, "Names"),
		grp(FilterPersonal, nMsg),
	}}
	for _, tt := range []struct {
		f    MailboxFacts
		want bool
	}{
		{sel("INBOX"), false}, // the selected mailbox never
		{box("INBOX"), true},  // personal wants message events
		{box("Names"), false}, // its group wants no message event
		{box("Other"), true},
	} {
		if got := in.InitialStatus(tt.f); got != tt.want {
			t.Errorf("InitialStatus(%+v) = %v, want %v", tt.f, got, tt.want)
		}
	}
	in.Status = false
	if in.InitialStatus(box("INBOX")) {
		t.Error("InitialStatus without STATUS")
	}
}

func TestEmpty(t *testing.T) {
	if !(Interest{}).Empty() {
		t.Error("NOTIFY NONE is not empty")
	}
	if !(Interest{Groups: []EventGroup{grp(FilterSelected, 0), grp(FilterPersonal, 0)}}).Empty() {
		t.Error("only NONE groups is not empty")
	}
	if (Interest{Groups: []EventGroup{grp(FilterPersonal, nSub)}}).Empty() {
		t.Error("a group with events is empty")
	}
	// "Selected-mailbox events only" is expressible.
	plain := Interest{Groups: []EventGroup{grp(FilterSelected, nAll)}}
	if err := plain.Validate(); err != nil || !plain.Wants(event.FlagChange, sel("INBOX")) || plain.Wants(event.MessageNew, box("Sent")) || plain.Wants(event.MailboxCreate, box("New")) {
		t.Errorf("selected-only interest: %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		in   Interest
		want string // "" = valid
	}{
		{Interest{}, ""},
		{Interest{Groups: []EventGroup{grp(FilterPersonal, nMsg|NewNotifyEvents(NotifyAnnotationChange))}}, ""},
		{Interest{Groups: []EventGroup{grp(0, nMsg)}}, "mapping: NOTIFY event group 1: invalid filter FilterKind(0)"},
		{Interest{Groups: []EventGroup{grp(FilterSubtree, nMsg)}}, "mapping: NOTIFY event group 1: subtree without a mailbox"},
		{Interest{Groups: []EventGroup{grp(FilterPersonal, nMsg, "INBOX")}}, "mapping: NOTIFY event group 1: personal takes no mailbox names"},
		{Interest{Groups: []EventGroup{grp(FilterPersonal, NotifyEvents(1))}}, "mapping: NOTIFY event group 1: invalid event set 0x1"},
		{Interest{Groups: []EventGroup{grp(FilterPersonal, NotifyEvents(1<<12))}}, "mapping: NOTIFY event group 1: invalid event set 0x1000"},
		{Interest{Groups: []EventGroup{{Filter: Filter{Kind: FilterSelected}, Events: nName, FetchAtts: []imap.FetchItem{"UID"}}}},
			"mapping: NOTIFY event group 1: MailboxName is not a message event and cannot be given for selected"},
		{Interest{Groups: []EventGroup{{Filter: Filter{Kind: FilterSelected}, Events: NewNotifyEvents(NotifyMessageExpunge), FetchAtts: []imap.FetchItem{"UID"}}}},
			"mapping: NOTIFY event group 1: fetch-att list without MessageNew"},
		{Interest{Groups: []EventGroup{grp(FilterSubscribed, NewNotifyEvents(NotifyFlagChange, NotifyMessageNew, NotifyMessageExpunge)), grp(FilterPersonal, NewNotifyEvents(NotifyMessageExpunge))}},
			"mapping: NOTIFY event group 2: MessageNew and MessageExpunge must be given together"},
	}
	for _, tt := range tests {
		err := tt.in.Validate()
		got := ""
		if err != nil {
			got = err.Error()
			var ie *InterestError
			if !errors.As(err, &ie) {
				t.Errorf("Validate(%v) returned %T", tt.in, err)
			}
		}
		if got != tt.want {
			t.Errorf("Validate(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
	in := Interest{Groups: []EventGroup{grp(FilterPersonal, nMsg|NewNotifyEvents(NotifyAnnotationChange, NotifyServerMetadataChange))}}
	if got := in.Unsupported().String(); got != "AnnotationChange ServerMetadataChange" {
		t.Errorf("Unsupported() = %q", got)
	}
}
