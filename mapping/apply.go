// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import "github.com/maddy-notify/maddy-notify/event"

// StatusChange is the newest STATUS value of a mailbox, from the account's
// state, as one session takes it.
type StatusChange struct {
	// Mailbox is the mailbox, UTF-8 in the store's spelling.
	Mailbox string
	// Delimiter is the store's hierarchy delimiter ("" for none).
	Delimiter string
	// Subscribed says whether the mailbox is subscribed.
	Subscribed bool
	// Value holds the mailbox's values.
	Value Status
	// Own says that every change of the mailbox since the session last
	// took its value was the session's own: its client made them and is
	// not told of them.
	Own bool
}

// MapStatus applies Map to a new STATUS value of a mailbox for the session
// described by view, whose memory of what its client was told is sv, and
// returns the STATUS line to write (nil: none). The value is mapped as a
// message event in its mailbox, by the session itself when c.Own: a
// FlagChange when it differs from what sv remembers in flag-dependent
// items only, a MessageNew otherwise. What Map says is then applied to sv:
//
//   - NeedStatus: the line, if the values differ from what the client was
//     last told (StatusView.Update);
//   - the selected mailbox (SelectedHandledByStore, NeedFetchNew): no line,
//     the value recorded (the client learns that mailbox's state from the
//     store's EXISTS and EXPUNGE);
//   - Nothing for the session's own change: no line, and the mailbox
//     forgotten (the client knows it changed the mailbox but was not told
//     the values, so the next value is told whatever it is);
//   - any other Nothing: no line, nothing recorded (a NOTIFY client that
//     did not ask for the change);
//   - Defer: no line, nothing recorded, and deferred is true: the caller
//     keeps the change until the client is in IDLE (plain_clients draft).
//
// It is pure but for sv, which the caller serialises.
func MapStatus(p Policy, view SessionView, sv *StatusView, c StatusChange) (line []byte, deferred bool) {
	kind := event.MessageNew
	if sv.OnlyFlagsChanged(c.Mailbox, c.Value) {
		kind = event.FlagChange
	}
	ev := event.Event{Kind: kind, Account: view.Account, Mailbox: c.Mailbox, Delimiter: c.Delimiter}
	if c.Own {
		ev.Origin = view.ID
	}
	view.Subscribed = c.Subscribed
	plan := Map(p, ev, view)
	switch plan.Action {
	case Defer:
		return nil, true
	case SelectedHandledByStore, NeedFetchNew:
		sv.Update(c.Mailbox, c.Value)
	case NeedStatus:
		if line, changed := sv.Update(c.Mailbox, c.Value); changed {
			return line, false
		}
	case Nothing:
		if plan.Reason == ReasonOwnChange {
			sv.Forget(c.Mailbox)
		}
	}
	return nil, false
}

// MapNewMessages returns the items written after UID in the module's FETCH
// of each new message the store announced (EXISTS) in the session's
// selected mailbox, or nil for no FETCH: Map's answer for a MessageNew in
// that mailbox (a MessageAppend where p.Events has no MessageNew).
func MapNewMessages(p Policy, view SessionView) FetchItems {
	kind := event.MessageNew
	if !p.Events.Has(kind) {
		kind = event.MessageAppend
	}
	plan := Map(p, event.Event{Kind: kind, Account: view.Account, Mailbox: view.Selected}, view)
	if plan.Action != NeedFetchNew {
		return nil
	}
	return plan.Fetch
}

// ApplyEvent records in sv what the session's client takes the mailboxes
// to hold after the mailbox event ev, which the session was handed (told
// as Map said, or not told at all, as its own change): see
// StatusView.Apply, and StatusView.ApplyListed for a plain session told of
// another session's rename as a deletion and a creation (TellsOldName).
func ApplyEvent(p Policy, view SessionView, sv *StatusView, ev event.Event) {
	if !TellsOldName(p, view) && ev.Origin != view.ID {
		sv.ApplyListed(ev, view.ID)
		return
	}
	sv.Apply(ev, view.ID)
}
