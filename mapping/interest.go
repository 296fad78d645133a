// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"fmt"
	"strings"

	"github.com/emersion/go-imap"
	"github.com/maddy-notify/maddy-notify/event"
)

// NotifyEvent is an event name of RFC 5465 section 5, as a client names it
// in NOTIFY SET. The zero NotifyEvent is not a valid event.
type NotifyEvent uint8

// The events of RFC 5465. Their String forms are the RFC's spellings.
const (
	NotifyMessageNew NotifyEvent = iota + 1
	NotifyMessageExpunge
	NotifyFlagChange
	NotifyAnnotationChange
	NotifyMailboxName
	NotifySubscriptionChange
	NotifyMailboxMetadataChange
	NotifyServerMetadataChange

	maxNotifyEvent = NotifyServerMetadataChange
)

var notifyEventNames = [...]string{
	NotifyMessageNew:            "MessageNew",
	NotifyMessageExpunge:        "MessageExpunge",
	NotifyFlagChange:            "FlagChange",
	NotifyAnnotationChange:      "AnnotationChange",
	NotifyMailboxName:           "MailboxName",
	NotifySubscriptionChange:    "SubscriptionChange",
	NotifyMailboxMetadataChange: "MailboxMetadataChange",
	NotifyServerMetadataChange:  "ServerMetadataChange",
}

// Valid reports whether e is one of the declared events.
func (e NotifyEvent) Valid() bool { return e >= 1 && e <= maxNotifyEvent }

// String returns the RFC 5465 spelling, e.g. "MessageNew", or
// "NotifyEvent(n)" for an invalid event.
func (e NotifyEvent) String() string {
	if !e.Valid() {
		return fmt.Sprintf("NotifyEvent(%d)", uint8(e))
	}
	return notifyEventNames[e]
}

// ParseNotifyEvent returns the event named s, compared without regard to
// case (RFC 5465 section 8: the ABNF's strings are case-insensitive, so
// "messagenew" is MessageNew). ok is false for a name RFC 5465 does not
// define.
func ParseNotifyEvent(s string) (e NotifyEvent, ok bool) {
	for e := NotifyEvent(1); e <= maxNotifyEvent; e++ {
		if strings.EqualFold(s, notifyEventNames[e]) {
			return e, true
		}
	}
	return 0, false
}

// IsMessage reports whether e is a message event (RFC 5465 "message-event":
// MessageNew, MessageExpunge, FlagChange, AnnotationChange), the only kind a
// selected or selected-delayed filter may carry.
func (e NotifyEvent) IsMessage() bool {
	return e >= NotifyMessageNew && e <= NotifyAnnotationChange
}

// Supported reports whether storage.notify can deliver e: every event but
// AnnotationChange, MailboxMetadataChange and ServerMetadataChange (maddy
// 0.8.2 has neither ANNOTATE nor METADATA).
func (e NotifyEvent) Supported() bool {
	return SupportedNotifyEvents().Has(e)
}

// SupportedNotifyEvents returns the events storage.notify can deliver, the
// list a NO [BADEVENT (...)] response names: MessageNew MessageExpunge
// FlagChange MailboxName SubscriptionChange.
func SupportedNotifyEvents() NotifyEvents {
	return NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge, NotifyFlagChange,
		NotifyMailboxName, NotifySubscriptionChange)
}

// NotifyEventOf returns the RFC 5465 event that reports a change of kind k:
// MessageNew and MessageAppend are MessageNew (RFC 5465 section 5.2 covers
// delivery and APPEND/COPY alike), MailboxCreate, MailboxDelete and
// MailboxRename are MailboxName, the others have their own names. It returns
// 0 for an invalid kind.
func NotifyEventOf(k event.Kind) NotifyEvent {
	switch k {
	case event.MessageNew, event.MessageAppend:
		return NotifyMessageNew
	case event.MessageExpunge:
		return NotifyMessageExpunge
	case event.FlagChange:
		return NotifyFlagChange
	case event.MailboxCreate, event.MailboxDelete, event.MailboxRename:
		return NotifyMailboxName
	case event.SubscriptionChange:
		return NotifySubscriptionChange
	}
	return 0
}

// NotifyEvents is a set of RFC 5465 events. The zero value is the empty set,
// which an event group uses for NONE.
type NotifyEvents uint16

// NewNotifyEvents returns the set of the given events. It panics on an
// invalid event.
func NewNotifyEvents(events ...NotifyEvent) NotifyEvents {
	var s NotifyEvents
	for _, e := range events {
		if !e.Valid() {
			panic(fmt.Sprintf("mapping: NewNotifyEvents: invalid event %v", e))
		}
		s |= 1 << e
	}
	return s
}

// Has reports whether e is in s.
func (s NotifyEvents) Has(e NotifyEvent) bool { return e.Valid() && s&(1<<e) != 0 }

// Events returns the events of s in declaration order.
func (s NotifyEvents) Events() []NotifyEvent {
	var out []NotifyEvent
	for e := NotifyEvent(1); e <= maxNotifyEvent; e++ {
		if s.Has(e) {
			out = append(out, e)
		}
	}
	return out
}

// String returns the event names separated by spaces in declaration order,
// e.g. "MessageNew MessageExpunge"; "" for the empty set.
func (s NotifyEvents) String() string {
	var names []string
	for _, e := range s.Events() {
		names = append(names, e.String())
	}
	return strings.Join(names, " ")
}

// FilterKind is an RFC 5465 mailbox filter ("filter-mailboxes", section 6).
// The zero FilterKind is not a valid filter.
type FilterKind uint8

// The filters of RFC 5465 section 6.
const (
	// FilterSelected: the selected mailbox; its events are told at once
	// (section 6.1).
	FilterSelected FilterKind = iota + 1
	// FilterSelectedDelayed: the selected mailbox; expunges wait for a
	// command that may report them (section 6.1).
	FilterSelectedDelayed
	// FilterInboxes: the mailboxes an MDA may deliver to (section 6.3).
	// maddy cannot compute that set (imap_filter may route a delivery into
	// any folder, quarantine into Junk), so, as section 6.3 requires of such
	// a server, it matches what FilterPersonal matches.
	FilterInboxes
	// FilterPersonal: every mailbox of the account (section 6.2; maddy has
	// only the personal namespace).
	FilterPersonal
	// FilterSubscribed: the subscribed mailboxes, as they are at the time of
	// the change (section 6.4); a SubscriptionChange, which moves a mailbox
	// into or out of that set, always matches.
	FilterSubscribed
	// FilterSubtree: the named mailboxes and every mailbox below them
	// (section 6.5).
	FilterSubtree
	// FilterMailboxes: exactly the named mailboxes, no wildcards (section
	// 6.6). Names of mailboxes that do not exist are kept and match nothing
	// until such a mailbox is created.
	FilterMailboxes

	maxFilterKind = FilterMailboxes
)

var filterNames = [...]string{
	FilterSelected:        "selected",
	FilterSelectedDelayed: "selected-delayed",
	FilterInboxes:         "inboxes",
	FilterPersonal:        "personal",
	FilterSubscribed:      "subscribed",
	FilterSubtree:         "subtree",
	FilterMailboxes:       "mailboxes",
}

// Valid reports whether k is one of the declared filters.
func (k FilterKind) Valid() bool { return k >= 1 && k <= maxFilterKind }

// String returns the RFC 5465 keyword, e.g. "selected-delayed", or
// "FilterKind(n)" for an invalid filter.
func (k FilterKind) String() string {
	if !k.Valid() {
		return fmt.Sprintf("FilterKind(%d)", uint8(k))
	}
	return filterNames[k]
}

// ParseFilterKind returns the filter named s, compared without regard to
// case. ok is false for a name RFC 5465 does not define.
func ParseFilterKind(s string) (k FilterKind, ok bool) {
	for k := FilterKind(1); k <= maxFilterKind; k++ {
		if strings.EqualFold(s, filterNames[k]) {
			return k, true
		}
	}
	return 0, false
}

// IsSelected reports whether k is FilterSelected or FilterSelectedDelayed.
func (k FilterKind) IsSelected() bool {
	return k == FilterSelected || k == FilterSelectedDelayed
}

// HasMailboxes reports whether k names mailboxes (FilterSubtree,
// FilterMailboxes).
func (k FilterKind) HasMailboxes() bool {
	return k == FilterSubtree || k == FilterMailboxes
}

// Filter says which mailboxes an event group is about.
type Filter struct {
	Kind FilterKind
	// Mailboxes are the names given to FilterSubtree and FilterMailboxes
	// (at least one), as UTF-8 in the store's spelling (decoded from
	// modified UTF-7), INBOX in any case written "INBOX". Empty for the
	// other kinds.
	Mailboxes []string
}

// EventGroup is one "event-group" of NOTIFY SET: a filter and the events
// wanted for the mailboxes it matches.
type EventGroup struct {
	Filter Filter
	// Events are the events wanted; the empty set is NONE: the client
	// wants nothing for these mailboxes (and, as the first group that
	// matches them, nothing from a later group either).
	Events NotifyEvents
	// FetchAtts are the items of MessageNew's fetch-att list, upper-cased
	// as go-imap v1's FETCH parses them (e.g. "UID", "BODY.PEEK[HEADER]").
	// Only a selected or selected-delayed group with MessageNew has them;
	// empty means the client asked for none (EXISTS alone tells it).
	FetchAtts []imap.FetchItem
}

// Interest is what one session asked to be told, with NOTIFY (RFC 5465).
// The zero value, no groups, is NOTIFY NONE: nothing at all.
//
// To express "events of the selected mailbox only", use one group with
// FilterSelected and the message events:
//
//	Interest{Groups: []EventGroup{{
//		Filter: Filter{Kind: FilterSelected},
//		Events: NewNotifyEvents(NotifyMessageNew, NotifyMessageExpunge, NotifyFlagChange),
//	}}}
//
// An Interest is a value: share it freely, but do not modify its slices once
// a session uses it. Its methods are pure and may be called from any
// goroutine.
type Interest struct {
	// Status is NOTIFY SET STATUS: before NOTIFY's tagged OK, send a STATUS
	// for each mailbox other than the selected one for which a message
	// event is wanted (InitialStatus says which).
	Status bool
	// Groups are the event groups in the order the client gave them; the
	// first that matches a change's mailbox decides (Match).
	Groups []EventGroup
}

// InterestError is the rule of RFC 5465 that an Interest breaks
// (Interest.Validate). A server answers NOTIFY with a tagged BAD for each.
type InterestError struct {
	// Group is the index of the offending group.
	Group int
	// Reason says what is wrong, as a sentence fit for a BAD response.
	Reason string
}

func (e *InterestError) Error() string {
	return fmt.Sprintf("mapping: NOTIFY event group %d: %s", e.Group+1, e.Reason)
}

// Validate checks the rules of RFC 5465 sections 5, 6.1 and 8 that a NOTIFY
// SET must follow, and returns an *InterestError for the first one broken:
//
//   - a valid filter; mailbox names exactly for subtree and mailboxes;
//   - at most one selected or selected-delayed group (section 6.1);
//   - only message events in such a group (section 6.1);
//   - a fetch-att list only on MessageNew in such a group (section 8);
//   - MessageNew and MessageExpunge together (section 5);
//   - FlagChange and AnnotationChange only with both (section 5).
//
// These rules hold for every filter, not only the selected ones: section 5
// says so for the last two, and its own example "(subtree Lists
// (MessageNew))" in section 3.1 breaks it (docs/notify.md). Validate does not
// reject events storage.notify does not support (see Unsupported): a server
// answers those with NO [BADEVENT], not BAD.
func (in Interest) Validate() error {
	selected := -1
	for i, g := range in.Groups {
		bad := func(format string, args ...any) error {
			return &InterestError{Group: i, Reason: fmt.Sprintf(format, args...)}
		}
		k := g.Filter.Kind
		switch {
		case !k.Valid():
			return bad("invalid filter %v", k)
		case k.HasMailboxes() && len(g.Filter.Mailboxes) == 0:
			return bad("%v without a mailbox", k)
		case !k.HasMailboxes() && len(g.Filter.Mailboxes) > 0:
			return bad("%v takes no mailbox names", k)
		}
		if g.Events>>(maxNotifyEvent+1) != 0 || g.Events&1 != 0 {
			return bad("invalid event set %#x", uint16(g.Events))
		}
		if k.IsSelected() {
			if selected >= 0 {
				return bad("%v after %v: only one of selected and selected-delayed may be given", k, in.Groups[selected].Filter.Kind)
			}
			selected = i
			for _, e := range g.Events.Events() {
				if !e.IsMessage() {
					return bad("%v is not a message event and cannot be given for %v", e, k)
				}
			}
		}
		if len(g.FetchAtts) > 0 {
			if !k.IsSelected() {
				return bad("a fetch-att list for MessageNew is allowed only with selected or selected-delayed, not %v", k)
			}
			if !g.Events.Has(NotifyMessageNew) {
				return bad("fetch-att list without MessageNew")
			}
		}
		hasNew, hasExpunge := g.Events.Has(NotifyMessageNew), g.Events.Has(NotifyMessageExpunge)
		if hasNew != hasExpunge {
			return bad("MessageNew and MessageExpunge must be given together")
		}
		for _, e := range []NotifyEvent{NotifyFlagChange, NotifyAnnotationChange} {
			if g.Events.Has(e) && !hasNew {
				return bad("%v requires MessageNew and MessageExpunge", e)
			}
		}
	}
	return nil
}

// Unsupported returns the events of all groups that storage.notify does not
// support (NotifyEvent.Supported).
func (in Interest) Unsupported() NotifyEvents {
	var s NotifyEvents
	for _, g := range in.Groups {
		s |= g.Events
	}
	return s &^ SupportedNotifyEvents()
}

// Empty reports whether in wants no event at all (NOTIFY NONE, or only
// groups with NONE).
func (in Interest) Empty() bool {
	for _, g := range in.Groups {
		if g.Events != 0 {
			return false
		}
	}
	return true
}

// NeedsSubscription reports whether Match reads MailboxFacts.Subscribed (a
// subscribed filter is present), so a caller looks it up only when needed.
func (in Interest) NeedsSubscription() bool {
	for _, g := range in.Groups {
		if g.Filter.Kind == FilterSubscribed {
			return true
		}
	}
	return false
}

// SelectedGroup returns the selected or selected-delayed group, if any.
// Without one the client wants no message events for the selected mailbox
// (RFC 5465 section 3: the same as "selected NONE").
func (in Interest) SelectedGroup() (EventGroup, bool) {
	for _, g := range in.Groups {
		if g.Filter.Kind.IsSelected() {
			return g, true
		}
	}
	return EventGroup{}, false
}

// MailboxFacts is what Match needs to know about the mailbox a change is
// about, as the receiving session sees it.
type MailboxFacts struct {
	// Name is the mailbox, UTF-8 in the store's spelling (event.Event
	// Mailbox). For MailboxRename it is the new name.
	Name string
	// Delimiter is the store's hierarchy delimiter ("" for none), for
	// subtree filters.
	Delimiter string
	// Selected says whether the session has this mailbox selected.
	Selected bool
	// Subscribed says whether the mailbox is subscribed; for a deleted
	// mailbox, whether it was before. Read only when NeedsSubscription, and
	// not for SubscriptionChange (the subscribed filter matches every one).
	Subscribed bool
}

// Match is Interest.Match's answer for one change.
type Match struct {
	// Group is the index in Interest.Groups of the group that decides,
	// or -1 when no group matches the mailbox.
	Group int
	// Wanted says whether that group asks for the change's event.
	Wanted bool
	// Status: the change is a message event wanted for a mailbox that is
	// not selected, which RFC 5465 sections 5.1 to 5.3 report with an
	// unsolicited STATUS. (Which items, and whether a FlagChange moved any
	// of them, is the caller's to decide.)
	Status bool
	// Fetch: for MessageNew wanted in the selected mailbox, the fetch-att
	// list of the FETCH that follows EXISTS (section 5.2); empty for no
	// FETCH. Shared with the Interest: do not modify.
	Fetch []imap.FetchItem
	// Delayed: for MessageExpunge wanted in the selected mailbox under
	// selected-delayed, expunges wait for a command that may report them
	// (NOOP, IDLE, CHECK, and the like; RFC 5465 section 6.1).
	Delayed bool
}

// Match decides which event group applies to event e in the mailbox f and
// whether the client wants it. The first group (in the client's order) whose
// filter matches the mailbox decides, and only it: a NONE group or a group
// without e silences later groups for that mailbox (RFC 5465 leaves the
// choice open; the first match is what Archiveopteryx, by an author of the
// RFC, does; docs/notify.md). A filter matches as follows:
//
//   - For a message event in the selected mailbox only selected and
//     selected-delayed match; without such a group nothing is wanted there.
//   - selected and selected-delayed match nothing else: a mailbox event
//     (MailboxName, SubscriptionChange) about the selected mailbox is
//     matched by the other filters, as about any other mailbox.
//   - inboxes and personal match every mailbox (FilterInboxes explains).
//   - subscribed matches when f.Subscribed, and for every
//     SubscriptionChange (the mailbox was subscribed before or after it).
//   - subtree matches a named mailbox and every mailbox below it
//     (f.Delimiter); mailboxes matches exactly the named ones. INBOX is
//     compared without regard to case.
//
// An invalid e is wanted by no group.
func (in Interest) Match(e NotifyEvent, f MailboxFacts) Match {
	if !e.Valid() {
		return Match{Group: -1}
	}
	for i, g := range in.Groups {
		if !g.Filter.matches(e, f) {
			continue
		}
		m := Match{Group: i, Wanted: g.Events.Has(e)}
		if !m.Wanted {
			return m
		}
		switch {
		case !e.IsMessage():
		case !f.Selected:
			m.Status = true
		case e == NotifyMessageNew:
			m.Fetch = g.FetchAtts
		case e == NotifyMessageExpunge:
			m.Delayed = g.Filter.Kind == FilterSelectedDelayed
		}
		return m
	}
	return Match{Group: -1}
}

// Wants reports whether a change of kind k in mailbox f is to be told
// (Match of NotifyEventOf(k)).
func (in Interest) Wants(k event.Kind, f MailboxFacts) bool {
	return in.Match(NotifyEventOf(k), f).Wanted
}

// InitialStatus reports whether NOTIFY SET STATUS asks for a STATUS of
// mailbox f before the tagged OK: in.Status is set, f is not the selected
// mailbox, and the group that decides for f wants a message event (RFC 5465
// section 3.1).
func (in Interest) InitialStatus(f MailboxFacts) bool {
	if !in.Status || f.Selected {
		return false
	}
	for _, e := range []NotifyEvent{NotifyMessageNew, NotifyMessageExpunge, NotifyFlagChange, NotifyAnnotationChange} {
		if in.Match(e, f).Wanted {
			return true
		}
	}
	return false
}

func (flt Filter) matches(e NotifyEvent, f MailboxFacts) bool {
	if flt.Kind.IsSelected() {
		return f.Selected && e.IsMessage()
	}
	if f.Selected && e.IsMessage() {
		return false
	}
	switch flt.Kind {
	case FilterInboxes, FilterPersonal:
		return true
	case FilterSubscribed:
		// A subscription change moves the mailbox into or out of the set:
		// it belonged to it before or after, so the client hears of both.
		return f.Subscribed || e == NotifySubscriptionChange
	case FilterSubtree:
		for _, root := range flt.Mailboxes {
			if inSubtree(f.Name, root, f.Delimiter) {
				return true
			}
		}
	case FilterMailboxes:
		for _, name := range flt.Mailboxes {
			if SameMailbox(f.Name, name) {
				return true
			}
		}
	}
	return false
}

// inSubtree reports whether name is root or below it: root, the delimiter,
// and more (INBOX as root compared without regard to case).
func inSubtree(name, root, delim string) bool {
	if SameMailbox(name, root) {
		return true
	}
	if delim == "" || len(name) <= len(root)+len(delim) {
		return false
	}
	return SameMailbox(name[:len(root)], root) && name[len(root):len(root)+len(delim)] == delim
}

// String returns the NOTIFY arguments that ask for in, in a canonical form:
// "NONE" for no groups, else "SET", "STATUS" when set, and the groups, e.g.
//
//	SET STATUS (selected (MessageNew (UID) MessageExpunge)) (subtree ("Lists") (MessageNew MessageExpunge)) (personal NONE)
//
// Mailbox names are written as mapping writes them everywhere (MailboxName);
// the result parses back to an equal Interest. For logs and tests.
func (in Interest) String() string {
	if len(in.Groups) == 0 {
		return "NONE"
	}
	b := []byte("SET")
	if in.Status {
		b = append(b, " STATUS"...)
	}
	for _, g := range in.Groups {
		b = append(b, " ("...)
		b = append(b, g.Filter.Kind.String()...)
		if len(g.Filter.Mailboxes) > 0 {
			b = append(b, " ("...)
			for i, name := range g.Filter.Mailboxes {
				if i > 0 {
					b = append(b, ' ')
				}
				b = appendMailbox(b, name)
			}
			b = append(b, ')')
		}
		if g.Events == 0 {
			b = append(b, " NONE)"...)
			continue
		}
		b = append(b, " ("...)
		for i, e := range g.Events.Events() {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, e.String()...)
			if e == NotifyMessageNew && len(g.FetchAtts) > 0 {
				b = append(b, " ("...)
				for j, it := range g.FetchAtts {
					if j > 0 {
						b = append(b, ' ')
					}
					b = append(b, it...)
				}
				b = append(b, ')')
			}
		}
		b = append(b, "))"...)
	}
	return string(b)
}
