// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
)

// The STATUS data items storage.notify can report (RFC 3501 section 6.3.10).
const (
	StatusMessages    = "MESSAGES"
	StatusRecent      = "RECENT"
	StatusUIDNext     = "UIDNEXT"
	StatusUIDValidity = "UIDVALIDITY"
	StatusUnseen      = "UNSEEN"
)

var knownStatusItems = []string{StatusMessages, StatusRecent, StatusUIDNext, StatusUIDValidity, StatusUnseen}

// StatusItems is the list of STATUS data items a session is sent, in the
// order they are written. Build it with ParseStatusItems; a StatusItems with
// unknown or duplicate items makes StatusLine and StatusView panic.
type StatusItems []string

// ParseStatusItems checks and canonicalises configured STATUS items: each one
// of MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN (any case), no
// duplicates, and MESSAGES among them (draft-melnikov-lemonade-imap-events
// section 3.2: the STATUS "MUST" contain MESSAGES). The order is kept.
func ParseStatusItems(items []string) (StatusItems, error) {
	if len(items) == 0 {
		return nil, fmt.Errorf("mapping: no STATUS items")
	}
	out := make(StatusItems, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		up := strings.ToUpper(it)
		if !isStatusItem(up) {
			return nil, fmt.Errorf("mapping: unknown STATUS item %q (known: %s)", it, strings.Join(knownStatusItems, " "))
		}
		if seen[up] {
			return nil, fmt.Errorf("mapping: duplicate STATUS item %s", up)
		}
		seen[up] = true
		out = append(out, up)
	}
	if !seen[StatusMessages] {
		return nil, fmt.Errorf("mapping: STATUS items must include %s (draft-melnikov-lemonade-imap-events 3.2)", StatusMessages)
	}
	return out, nil
}

func isStatusItem(s string) bool {
	for _, k := range knownStatusItems {
		if s == k {
			return true
		}
	}
	return false
}

// Request returns the items as go-imap v1 wants them for
// backend.User.Status. The slice is new on every call.
func (items StatusItems) Request() []imap.StatusItem {
	out := make([]imap.StatusItem, len(items))
	for i, it := range items {
		out[i] = imap.StatusItem(it)
	}
	return out
}

// FlagDependent reports whether a flag change can change one of the items:
// only UNSEEN can (STORE cannot set \Recent, and MESSAGES, UIDNEXT and
// UIDVALIDITY do not depend on flags).
func (items StatusItems) FlagDependent() bool {
	for _, it := range items {
		if it == StatusUnseen {
			return true
		}
	}
	return false
}

// Status holds the values of the STATUS data items of one mailbox.
type Status struct {
	Messages, Recent, UIDNext, UIDValidity, Unseen uint32
}

// StatusOf converts what go-imap v1's backend.User.Status returns. Items the
// store did not report are 0.
func StatusOf(st *imap.MailboxStatus) Status {
	if st == nil {
		return Status{}
	}
	return Status{
		Messages:    st.Messages,
		Recent:      st.Recent,
		UIDNext:     st.UidNext,
		UIDValidity: st.UidValidity,
		Unseen:      st.Unseen,
	}
}

func (st Status) value(item string) uint32 {
	switch item {
	case StatusMessages:
		return st.Messages
	case StatusRecent:
		return st.Recent
	case StatusUIDNext:
		return st.UIDNext
	case StatusUIDValidity:
		return st.UIDValidity
	case StatusUnseen:
		return st.Unseen
	}
	panic(fmt.Sprintf("mapping: unknown STATUS item %q (build StatusItems with ParseStatusItems)", item))
}

// masked returns st with every value that is not in items set to 0, so two
// masked values compare equal exactly when the client would see no change.
func (st Status) masked(items StatusItems) Status {
	var m Status
	for _, it := range items {
		v := st.value(it)
		switch it {
		case StatusMessages:
			m.Messages = v
		case StatusRecent:
			m.Recent = v
		case StatusUIDNext:
			m.UIDNext = v
		case StatusUIDValidity:
			m.UIDValidity = v
		case StatusUnseen:
			m.Unseen = v
		}
	}
	return m
}

// StatusLine returns the untagged STATUS response for mailbox (a UTF-8 name)
// with the items in the given order, e.g.
//
//	S: * STATUS "box" (MESSAGES 3 UIDNEXT 9 UNSEEN 1)\r\n
//
// go-imap v1's MailboxStatus.Format walks a map and so writes items in random
// order; this is why storage.notify writes STATUS itself.
func StatusLine(mailbox string, items StatusItems, st Status) []byte {
	b := make([]byte, 0, 32+len(mailbox)+16*len(items))
	b = append(b, "* STATUS "...)
	b = appendMailbox(b, mailbox)
	b = append(b, " ("...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, it...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(st.value(it)), 10)
	}
	return append(b, ")\r\n"...)
}

// StatusView is one session's memory of the STATUS values it was last sent,
// per mailbox. It makes STATUS coalesced and state-based: Update returns a
// line only when the configured items differ from what the session last got
// for that mailbox, so after a burst of changes the last STATUS the client
// got equals what a STATUS command would return.
//
// A StatusView belongs to one session and holds no lock: its caller (the
// session's own goroutine) serialises every call. Create it with
// NewStatusView.
type StatusView struct {
	items StatusItems
	sent  map[string]Status // MailboxKey → masked values last sent
}

// NewStatusView returns an empty view for the given items (from
// ParseStatusItems). It panics on an unknown item.
func NewStatusView(items StatusItems) *StatusView {
	for _, it := range items {
		if !isStatusItem(it) {
			panic(fmt.Sprintf("mapping: NewStatusView: unknown STATUS item %q", it))
		}
	}
	return &StatusView{items: append(StatusItems(nil), items...), sent: make(map[string]Status)}
}

// Items returns the items the view reports. The caller must not modify the
// returned slice.
func (v *StatusView) Items() StatusItems { return v.items }

// Update records st as the current state of mailbox. It returns the STATUS
// line to send and true when the configured items differ from the values
// last sent for that mailbox, or when nothing was sent for it yet (or since
// Forget); otherwise nil and false. Values not among the items are ignored.
//
// The caller writes the line (if any) after calling Update; a line that is
// then not written (the client logged out) needs no undo.
func (v *StatusView) Update(mailbox string, st Status) (line []byte, changed bool) {
	key := MailboxKey(mailbox)
	m := st.masked(v.items)
	if last, ok := v.sent[key]; ok && last == m {
		return nil, false
	}
	v.sent[key] = m
	return StatusLine(mailbox, v.items, st), true
}

// OnlyFlagsChanged reports whether st differs from the values last sent
// for mailbox in flag-dependent items only (UNSEEN, see FlagDependent):
// false when nothing was sent for it, or when nothing changed.
func (v *StatusView) OnlyFlagsChanged(mailbox string, st Status) bool {
	last, ok := v.sent[MailboxKey(mailbox)]
	if !ok {
		return false
	}
	m := st.masked(v.items)
	if last == m {
		return false
	}
	m.Unseen = last.Unseen
	return last == m
}

// Forget drops what the view remembers about mailbox, so the next Update for
// it sends a line whatever the values. Call it when the mailbox was deleted,
// when the session changed it itself (it was not sent a STATUS for its own
// change, so its last values no longer describe what the client knows), and
// when the session selects or leaves the mailbox (while selected, the client
// learns its state from EXISTS/EXPUNGE, not from STATUS).
func (v *StatusView) Forget(mailbox string) {
	delete(v.sent, MailboxKey(mailbox))
}

// Rename moves what the view remembers about oldName to newName: a renamed
// mailbox keeps its messages, and the client learns of the rename from the
// LIST OLDNAME response. Renaming INBOX is special in IMAP (its messages move
// to the new mailbox and INBOX stays, empty): then both names are forgotten.
// Children are not moved; see Apply.
func (v *StatusView) Rename(oldName, newName string) {
	oldKey, newKey := MailboxKey(oldName), MailboxKey(newName)
	if oldKey == newKey {
		return
	}
	st, ok := v.sent[oldKey]
	delete(v.sent, oldKey)
	delete(v.sent, newKey)
	if ok && !IsInbox(oldName) {
		v.sent[newKey] = st
	}
}

// Apply updates the view for an event of the session's account, whatever Map
// decided for it: MailboxCreate records the new mailbox as empty with
// UIDNEXT 1 (what the client takes it to be); MailboxDelete forgets the
// mailbox; MailboxRename renames it
// and, when ev.Delimiter is set, every remembered child ("old/x" becomes
// "new/x"), as IMAP RENAME moves the hierarchy; a message event that session
// caused itself (ev.Origin == session, session != 0) forgets the mailbox.
// Other events leave the view alone.
func (v *StatusView) Apply(ev event.Event, session uint64) {
	switch ev.Kind {
	case event.MailboxCreate:
		// The client takes a mailbox it was just told of as new: empty,
		// with UIDNEXT 1 (ApplyListed).
		v.sent[MailboxKey(ev.Mailbox)] = Status{UIDNext: 1}.masked(v.items)
	case event.MailboxDelete:
		v.Forget(ev.Mailbox)
	case event.MailboxRename:
		if ev.Delimiter != "" && !IsInbox(ev.OldMailbox) {
			prefix := ev.OldMailbox + ev.Delimiter
			var children []string
			for key := range v.sent {
				if strings.HasPrefix(key, prefix) {
					children = append(children, key)
				}
			}
			for _, key := range children {
				v.Rename(key, ev.Mailbox+ev.Delimiter+key[len(prefix):])
			}
		}
		v.Rename(ev.OldMailbox, ev.Mailbox)
	default:
		if ev.Kind.IsMessage() && session != 0 && ev.Origin == session {
			v.Forget(ev.Mailbox)
		}
	}
}

// ApplyListed is Apply for a session that was told of a rename as the old
// name's deletion and the new name's creation (LIST without OLDNAME, see
// PlainDraft): what the view remembers of the old name and its children
// is dropped, and the new name is remembered as a client takes a mailbox
// it was just told exists: empty, with UIDNEXT 1. The next value of the
// new name is then told unless it is that. Other events are applied as by
// Apply.
func (v *StatusView) ApplyListed(ev event.Event, session uint64) {
	if ev.Kind != event.MailboxRename {
		v.Apply(ev, session)
		return
	}
	if ev.Delimiter != "" && !IsInbox(ev.OldMailbox) {
		prefix := MailboxKey(ev.OldMailbox) + ev.Delimiter
		for key := range v.sent {
			if strings.HasPrefix(key, prefix) {
				delete(v.sent, key)
			}
		}
	}
	v.Forget(ev.OldMailbox)
	v.sent[MailboxKey(ev.Mailbox)] = Status{UIDNext: 1}.masked(v.items)
}

// Len returns the number of mailboxes the view remembers (for metrics and
// tests).
func (v *StatusView) Len() int { return len(v.sent) }

// InitialStatusItems are the items of the STATUS lines that NOTIFY SET
// STATUS writes before its tagged OK: MESSAGES, UIDNEXT and UIDVALIDITY,
// which RFC 5465 section 3.1 requires, then the other configured items in
// their order.
func InitialStatusItems(items StatusItems) StatusItems {
	out := StatusItems{StatusMessages, StatusUIDNext, StatusUIDValidity}
	for _, it := range items {
		if it != StatusMessages && it != StatusUIDNext && it != StatusUIDValidity {
			out = append(out, it)
		}
	}
	return out
}
