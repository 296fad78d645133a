// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"fmt"
	"strings"

	"github.com/maddy-notify/maddy-notify/event"
)

// KindSet is a set of event kinds. The zero value is the empty set.
type KindSet uint32

// NewKindSet returns the set of the given kinds. It panics on an invalid
// kind.
func NewKindSet(kinds ...event.Kind) KindSet {
	var s KindSet
	for _, k := range kinds {
		if !k.Valid() {
			panic(fmt.Sprintf("mapping: NewKindSet: invalid kind %v", k))
		}
		s |= 1 << k
	}
	return s
}

// AllKinds returns the set of every event kind.
func AllKinds() KindSet { return NewKindSet(event.Kinds()...) }

// ParseKinds returns the set of the named kinds (event.ParseKind names).
func ParseKinds(names []string) (KindSet, error) {
	var s KindSet
	for _, n := range names {
		k, err := event.ParseKind(n)
		if err != nil {
			return 0, fmt.Errorf("mapping: %w", err)
		}
		s |= 1 << k
	}
	return s, nil
}

// Has reports whether k is in s.
func (s KindSet) Has(k event.Kind) bool {
	return k.Valid() && s&(1<<k) != 0
}

// Kinds returns the kinds in s in declaration order.
func (s KindSet) Kinds() []event.Kind {
	var ks []event.Kind
	for _, k := range event.Kinds() {
		if s.Has(k) {
			ks = append(ks, k)
		}
	}
	return ks
}

// String returns the kind names separated by spaces, e.g. "MessageNew
// MailboxCreate"; "" for the empty set.
func (s KindSet) String() string {
	var names []string
	for _, k := range s.Kinds() {
		names = append(names, k.String())
	}
	return strings.Join(names, " ")
}

// MailboxScope says which mailboxes other than the selected one a session is
// sent STATUS for.
type MailboxScope uint8

const (
	// AllMailboxes: every mailbox of the account.
	AllMailboxes MailboxScope = iota
	// SubscribedMailboxes: mailboxes the account has subscribed to
	// (SessionView.Subscribed).
	SubscribedMailboxes
	// Inboxes: INBOX only. RFC 5465's "inboxes" means every mailbox that
	// may receive mail by delivery; maddy 0.8.2 has no such set (imap_filter
	// can route a delivery into any folder), so storage.notify reads it as
	// INBOX alone. Use AllMailboxes or SubscribedMailboxes to hear about
	// folders a filter routes mail into.
	Inboxes
	// NoMailboxes: no STATUS at all.
	NoMailboxes
)

var scopeNames = [...]string{
	AllMailboxes:        "all",
	SubscribedMailboxes: "subscribed",
	Inboxes:             "inboxes",
	NoMailboxes:         "none",
}

// String returns the configuration name: all, subscribed, inboxes or none.
func (s MailboxScope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("MailboxScope(%d)", uint8(s))
}

// ParseMailboxScope parses all, subscribed, inboxes or none (any case).
func ParseMailboxScope(s string) (MailboxScope, error) {
	for i, n := range scopeNames {
		if strings.EqualFold(s, n) {
			return MailboxScope(i), nil
		}
	}
	return 0, fmt.Errorf("mapping: unknown mailbox scope %q (known: %s)", s, strings.Join(scopeNames[:], ", "))
}

// PlainClients says what a session that did not ask for notifications (no
// RFC 5465 NOTIFY) is told beyond what the store sends it.
type PlainClients uint8

const (
	// PlainSelected: the draft's rows for the selected mailbox only: the
	// store's EXISTS, RECENT, EXPUNGE and FETCH FLAGS, plus the module's
	// FETCH with UID of each new message. No STATUS, no LIST: RFC 3501
	// lets a client expect neither unasked (Python's imaplib returns a
	// pushed LIST as the answer to its next LIST; Thunderbird credits a
	// STATUS to the folder it is asking about).
	PlainSelected PlainClients = iota
	// PlainDraft: the draft's whole mapping, STATUS and LIST of other
	// mailboxes included, written only while the client is in IDLE; what
	// is pending when IDLE ends waits for the next IDLE. LIST lines carry
	// no extended data (a rename is the old name's \NonExistent and the
	// new name's LIST).
	PlainDraft
	// PlainNone: nothing beyond the store's own lines, as stock maddy.
	PlainNone
	// AnyTime: the draft's whole mapping, written as soon as the session
	// can be written to, in IDLE or at NOOP/CHECK, with LIST extended data.
	// It is no configuration value: it is how a session that asked for
	// notifications is told (RFC 5465 lets the server write in any
	// state), and what the registry's own tests drive.
	AnyTime
)

var plainNames = [...]string{PlainSelected: "selected", PlainDraft: "draft", PlainNone: "none", AnyTime: "any-time"}

// PlainClientsValues maps the configuration names (plain_clients) to their
// values; AnyTime is not one of them.
func PlainClientsValues() map[string]PlainClients {
	return map[string]PlainClients{"selected": PlainSelected, "draft": PlainDraft, "none": PlainNone}
}

// String returns the configuration name: selected, draft or none.
func (c PlainClients) String() string {
	if int(c) < len(plainNames) {
		return plainNames[c]
	}
	return fmt.Sprintf("PlainClients(%d)", uint8(c))
}

// TellsMailboxes reports whether sessions are ever told about mailboxes
// other than the selected one (STATUS) or about the mailbox list (LIST).
func (c PlainClients) TellsMailboxes() bool { return c == PlainDraft || c == AnyTime }

// FetchesNew reports whether sessions get the module's FETCH of new
// messages in their selected mailbox.
func (c PlainClients) FetchesNew() bool { return c != PlainNone }

// Policy is the configuration Map applies. It is a value: copy it freely;
// do not modify its slices while Map may run with it.
type Policy struct {
	// Events are the kinds a session is told about; other kinds map to
	// Nothing (the store's own EXISTS/EXPUNGE/FETCH FLAGS in the selected
	// mailbox are not ours to switch off).
	Events KindSet
	// StatusItems are the items of every STATUS line (ParseStatusItems).
	StatusItems StatusItems
	// FetchItems are the items sent after UID for new messages in the
	// selected mailbox (ParseFetchItems); empty means no FETCH.
	FetchItems FetchItems
	// StatusMailboxes says which other mailboxes get STATUS.
	StatusMailboxes MailboxScope
	// Plain says what sessions without NOTIFY are told.
	Plain PlainClients
}

// DefaultPolicy returns the module's defaults: every event kind, STATUS
// (MESSAGES UIDNEXT UNSEEN) for all mailboxes, FETCH (UID FLAGS
// BODYSTRUCTURE) for new messages, and plain clients told about their
// selected mailbox only (PlainSelected).
func DefaultPolicy() Policy {
	return Policy{
		Events:          AllKinds(),
		StatusItems:     StatusItems{StatusMessages, StatusUIDNext, StatusUnseen},
		FetchItems:      FetchItems{"FLAGS", "BODYSTRUCTURE"},
		StatusMailboxes: AllMailboxes,
		Plain:           PlainSelected,
	}
}

// DraftPolicy returns DefaultPolicy with the draft's whole mapping for
// plain clients (PlainDraft).
func DraftPolicy() Policy {
	p := DefaultPolicy()
	p.Plain = PlainDraft
	return p
}

// AnyTimePolicy returns DefaultPolicy with the draft's whole mapping
// written at any time (AnyTime).
func AnyTimePolicy() Policy {
	p := DefaultPolicy()
	p.Plain = AnyTime
	return p
}

// Validate checks a policy built by hand: known items, a known scope, and
// STATUS items unless the scope is NoMailboxes.
func (p Policy) Validate() error {
	if p.StatusMailboxes > NoMailboxes {
		return fmt.Errorf("mapping: invalid mailbox scope %d", uint8(p.StatusMailboxes))
	}
	if p.Plain > AnyTime {
		return fmt.Errorf("mapping: invalid plain_clients value %d", uint8(p.Plain))
	}
	if p.StatusMailboxes != NoMailboxes || len(p.StatusItems) > 0 {
		if _, err := ParseStatusItems(p.StatusItems); err != nil {
			return err
		}
	}
	if _, err := ParseFetchItems(p.FetchItems); err != nil {
		return err
	}
	for _, it := range p.FetchItems {
		if strings.EqualFold(it, "UID") {
			return fmt.Errorf("mapping: UID in FetchItems (it is always sent; ParseFetchItems drops it)")
		}
	}
	return nil
}

// NeedsSubscription reports whether Map reads SessionView.Subscribed, so a
// caller computes it only when needed.
func (p Policy) NeedsSubscription() bool {
	return p.StatusMailboxes == SubscribedMailboxes
}

// SessionView is what Map needs to know about the receiving session.
type SessionView struct {
	// ID is the session's opaque id, compared with event.Event.Origin. It
	// must not be 0 (0 never matches: every event counts as someone else's).
	ID uint64
	// Account is the session's storage account name.
	Account string
	// Selected is the session's selected mailbox, "" when none.
	Selected string
	// Subscribed says whether the event's mailbox is subscribed. Map reads
	// it only under SubscribedMailboxes (Policy.NeedsSubscription).
	Subscribed bool
	// Idling says whether the client is in IDLE now.
	Idling bool
	// Notify is what the session asked for with NOTIFY SET or NOTIFY NONE
	// (RFC 5465); nil for a session that did not send NOTIFY, which is
	// told what Policy.Plain says. Shared: do not modify.
	Notify *Interest
}

// Action is what a Plan asks the session to do.
type Action uint8

const (
	// Nothing: write nothing (Plan.Reason says why).
	Nothing Action = iota
	// SelectedHandledByStore: the event is about the selected mailbox and
	// go-imap-mess already sends its EXISTS/RECENT, EXPUNGE or FETCH
	// (FLAGS UID); writing anything would duplicate it (a duplicate EXPUNGE
	// shifts the client's sequence numbers).
	SelectedHandledByStore
	// NeedStatus: query STATUS of Plan.Mailbox with Policy.StatusItems
	// (StatusItems.Request), then call StatusView.Update and write the line
	// it returns, if any.
	NeedStatus
	// NeedFetchNew: new messages arrived in the selected mailbox. After the
	// store has sent EXISTS (go-imap-mess, in the session's Poll/Idle), and
	// never from inside the store's SendUpdate callback (go-imap-mess holds
	// its handle lock there, which reading the mailbox needs), read
	// Plan.Fetch.Request() for the messages the session was announced and
	// not yet sent a FETCH for, and write FetchLine for each.
	NeedFetchNew
	// WriteLines: write Plan.Lines, in order.
	WriteLines
	// Defer: keep the event until the client is in IDLE (PlainDraft), then
	// map it again.
	Defer
)

var actionNames = [...]string{
	Nothing:                "Nothing",
	SelectedHandledByStore: "SelectedHandledByStore",
	NeedStatus:             "NeedStatus",
	NeedFetchNew:           "NeedFetchNew",
	WriteLines:             "WriteLines",
	Defer:                  "Defer",
}

// String returns the constant's name, e.g. "NeedStatus".
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Reasons a Plan says Nothing or SelectedHandledByStore, for debug logs.
const (
	ReasonInvalidEvent   = "invalid event"
	ReasonOtherAccount   = "other account"
	ReasonKindDisabled   = "event kind disabled"
	ReasonOwnChange      = "own change"
	ReasonStore          = "selected mailbox: sent by the store"
	ReasonNoFetchItems   = "selected mailbox: sent by the store; no FETCH items configured"
	ReasonNoFlagItems    = "no flag-dependent STATUS item"
	ReasonScopeNone      = "STATUS disabled (status mailboxes none)"
	ReasonNotSubscribed  = "mailbox not subscribed"
	ReasonNotInbox       = "mailbox is not INBOX"
	ReasonNoStatusConfig = "no STATUS items"
	ReasonPlainSelected  = "plain client: selected mailbox only (plain_clients selected)"
	ReasonPlainNone      = "plain client: stock lines only (plain_clients none)"
)

// Plan is Map's answer: what one session must do about one event.
type Plan struct {
	Action Action
	// Reason says why, for Nothing and SelectedHandledByStore.
	Reason string
	// Mailbox is the mailbox to query, for NeedStatus and NeedFetchNew
	// (the event's UTF-8 name).
	Mailbox string
	// Lines are complete responses (ending in CRLF) for WriteLines.
	Lines [][]byte
	// Fetch, for NeedFetchNew, are the items written after UID in the FETCH
	// of each new message: Policy.FetchItems for a plain session, the
	// MessageNew fetch-att list of a NOTIFY session (NotifyFetchItems).
	Fetch FetchItems
}

func nothing(reason string) Plan { return Plan{Action: Nothing, Reason: reason} }

// Map decides what the session described by view must be told about ev under
// policy p. It is the one place that decides what a session is told: the
// registry asks it for every mailbox event in a session's queue, for every
// new STATUS value of a mailbox (MapStatus) and for the new messages of the
// selected mailbox (MapNewMessages). It follows the table of
// docs/notifications.md:
//
//   - Nothing for an invalid event, another account's event, or a kind not in
//     p.Events.
//   - In the selected mailbox: MessageNew/MessageAppend → NeedFetchNew when
//     p.FetchItems is set, else SelectedHandledByStore; MessageExpunge and
//     FlagChange → SelectedHandledByStore. This holds for the session's own
//     changes too: the store tells it, as stock maddy does.
//   - In another mailbox, an event the session caused itself (ev.Origin ==
//     view.ID) → Nothing; otherwise MessageNew/MessageAppend/MessageExpunge →
//     NeedStatus, and FlagChange → NeedStatus only when a STATUS item can
//     depend on flags (UNSEEN), all subject to p.StatusMailboxes.
//   - Mailbox events the session did not cause itself → WriteLines with one
//     LIST line: MailboxCreate with ev.Attrs; MailboxDelete with \NonExistent;
//     MailboxRename with ev.Attrs and OLDNAME; SubscriptionChange with
//     ev.Attrs plus or minus \Subscribed. These go to every other session of
//     the account, the one that has the mailbox selected included (the draft
//     has no selected-mailbox form for them; a LIST never disturbs sequence
//     numbers). p.StatusMailboxes does not apply to LIST.
//   - A session that sent NOTIFY (view.Notify) is told what its Interest
//     asks for instead, in the forms of RFC 5465 (mapNotify).
//
// Map is pure; the caller applies the Plan (and StatusView.Apply) from the
// session's own goroutine.
func Map(p Policy, ev event.Event, view SessionView) Plan {
	if err := ev.Validate(); err != nil {
		return nothing(ReasonInvalidEvent + ": " + err.Error())
	}
	if ev.Account != view.Account {
		return nothing(ReasonOtherAccount)
	}
	if !p.Events.Has(ev.Kind) {
		return nothing(ReasonKindDisabled)
	}
	own := view.ID != 0 && ev.Origin == view.ID
	selected := view.Selected != "" && SameMailbox(ev.Mailbox, view.Selected)
	if view.Notify != nil {
		return mapNotify(p, ev, view, own, selected)
	}

	switch ev.Kind {
	case event.MessageNew, event.MessageAppend:
		if selected {
			if !p.Plain.FetchesNew() {
				return Plan{Action: SelectedHandledByStore, Reason: ReasonPlainNone}
			}
			if len(p.FetchItems) == 0 {
				return Plan{Action: SelectedHandledByStore, Reason: ReasonNoFetchItems}
			}
			return Plan{Action: NeedFetchNew, Mailbox: ev.Mailbox, Fetch: p.FetchItems}
		}
		if own {
			return nothing(ReasonOwnChange)
		}
		return statusPlan(p, ev, view)
	case event.MessageExpunge:
		if selected {
			return Plan{Action: SelectedHandledByStore, Reason: ReasonStore}
		}
		if own {
			return nothing(ReasonOwnChange)
		}
		return statusPlan(p, ev, view)
	case event.FlagChange:
		if selected {
			return Plan{Action: SelectedHandledByStore, Reason: ReasonStore}
		}
		if own {
			return nothing(ReasonOwnChange)
		}
		if !p.StatusItems.FlagDependent() {
			return nothing(ReasonNoFlagItems)
		}
		return statusPlan(p, ev, view)
	}

	// Mailbox events.
	if own {
		return nothing(ReasonOwnChange)
	}
	if plan, ok := plainGate(p, view); !ok {
		return plan
	}
	return Plan{Action: WriteLines, Lines: listLines(ev, TellsOldName(p, view), false)}
}

// TellsOldName reports whether the session is told of a rename with
// OLDNAME (RFC 5465), knowing that the mailbox's children moved with it: a
// NOTIFY session, and a session told at any time (AnyTime). A plain
// session is told the old name's \NonExistent and the new name's LIST.
func TellsOldName(p Policy, view SessionView) bool {
	return view.Notify != nil || p.Plain == AnyTime
}

// TellsNow reports whether the session may be told about mailboxes other
// than its selected one (STATUS, LIST) now: a NOTIFY session at any time,
// a plain session as plain_clients says (plainGate). What may not be told
// now waits (Defer).
func TellsNow(p Policy, view SessionView) bool {
	if view.Notify != nil {
		return true
	}
	_, ok := plainGate(p, view)
	return ok
}

// listLines are the LIST lines of a mailbox event. LIST extended data
// (OLDNAME) is for clients that asked for it (oldName: RFC 5465 NOTIFY,
// AnyTime); a plain client is told of a rename as the old name's
// \NonExistent and the new name's LIST. RENAME INBOX leaves INBOX in
// place. With subscribed (NOTIFY) the LIST of a created or renamed
// mailbox that is subscribed carries \Subscribed: RFC 5465 section 5.4
// requires it of a server that subscribes what it creates, as
// go-imap-sql does.
func listLines(ev event.Event, oldName, subscribed bool) [][]byte {
	attrs := ev.Attrs
	if subscribed && (ev.Kind == event.MailboxCreate || ev.Kind == event.MailboxRename) {
		attrs = SubscriptionAttrs(ev.Attrs, ev.Subscribed)
	}
	switch ev.Kind {
	case event.MailboxCreate:
		return [][]byte{ListLine(attrs, ev.Delimiter, ev.Mailbox, "")}
	case event.MailboxDelete:
		return [][]byte{ListLine([]string{AttrNonExistent}, ev.Delimiter, ev.Mailbox, "")}
	case event.MailboxRename:
		if oldName {
			return [][]byte{ListLine(attrs, ev.Delimiter, ev.Mailbox, ev.OldMailbox)}
		}
		var lines [][]byte
		if !IsInbox(ev.OldMailbox) {
			lines = append(lines, ListLine([]string{AttrNonExistent}, ev.Delimiter, ev.OldMailbox, ""))
		}
		return append(lines, ListLine(ev.Attrs, ev.Delimiter, ev.Mailbox, ""))
	case event.SubscriptionChange:
		return [][]byte{ListLine(SubscriptionAttrs(ev.Attrs, ev.Subscribed), ev.Delimiter, ev.Mailbox, "")}
	}
	// Validate accepted a kind this switch does not know.
	panic(fmt.Sprintf("mapping: Map: unhandled event kind %v", ev.Kind))
}

// Reasons of the Plans for sessions that sent NOTIFY.
const (
	ReasonNotAsked      = "not asked for (NOTIFY)"
	ReasonNotifyNoFetch = "selected mailbox: sent by the store; MessageNew asked without fetch-att"
)

// mapNotify is Map for a session that sent NOTIFY: what its Interest asks
// for, as RFC 5465 section 5 writes it. The store's own lines for the
// selected mailbox (EXISTS, EXPUNGE, FETCH FLAGS) go out as they do to
// every session.
func mapNotify(p Policy, ev event.Event, view SessionView, own, selected bool) Plan {
	facts := MailboxFacts{Name: ev.Mailbox, Delimiter: ev.Delimiter, Selected: selected, Subscribed: view.Subscribed}
	m := view.Notify.Match(NotifyEventOf(ev.Kind), facts)
	if ev.Kind.IsMessage() {
		switch {
		case selected && !m.Wanted:
			return Plan{Action: SelectedHandledByStore, Reason: ReasonNotAsked}
		case selected && (ev.Kind == event.MessageNew || ev.Kind == event.MessageAppend):
			if len(m.Fetch) == 0 {
				return Plan{Action: SelectedHandledByStore, Reason: ReasonNotifyNoFetch}
			}
			return Plan{Action: NeedFetchNew, Mailbox: ev.Mailbox, Fetch: NotifyFetchItems(m.Fetch)}
		case selected:
			return Plan{Action: SelectedHandledByStore, Reason: ReasonStore}
		case own:
			return nothing(ReasonOwnChange)
		case !m.Wanted:
			return nothing(ReasonNotAsked)
		case ev.Kind == event.FlagChange && !p.StatusItems.FlagDependent():
			return nothing(ReasonNoFlagItems)
		case len(p.StatusItems) == 0:
			return nothing(ReasonNoStatusConfig)
		}
		return Plan{Action: NeedStatus, Mailbox: ev.Mailbox}
	}
	if own {
		return nothing(ReasonOwnChange)
	}
	if !m.Wanted {
		return nothing(ReasonNotAsked)
	}
	return Plan{Action: WriteLines, Lines: listLines(ev, true, true)}
}

func statusPlan(p Policy, ev event.Event, view SessionView) Plan {
	if plan, ok := plainGate(p, view); !ok {
		return plan
	}
	switch p.StatusMailboxes {
	case NoMailboxes:
		return nothing(ReasonScopeNone)
	case SubscribedMailboxes:
		if !view.Subscribed {
			return nothing(ReasonNotSubscribed)
		}
	case Inboxes:
		if !IsInbox(ev.Mailbox) {
			return nothing(ReasonNotInbox)
		}
	}
	if len(p.StatusItems) == 0 {
		return nothing(ReasonNoStatusConfig)
	}
	return Plan{Action: NeedStatus, Mailbox: ev.Mailbox}
}

// plainGate decides whether a plain client may be told about a mailbox
// other than its selected one (STATUS) or about the mailbox list (LIST)
// now: never under PlainSelected and PlainNone, only in IDLE under
// PlainDraft. ok is false when plan is the answer (Nothing, or Defer: ask
// again once the client is in IDLE).
func plainGate(p Policy, view SessionView) (plan Plan, ok bool) {
	switch p.Plain {
	case AnyTime:
		return Plan{}, true
	case PlainDraft:
		if !view.Idling {
			return Plan{Action: Defer}, false
		}
		return Plan{}, true
	case PlainNone:
		return nothing(ReasonPlainNone), false
	default:
		return nothing(ReasonPlainSelected), false
	}
}
