// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// SetNotify records what the client of s asked for with NOTIFY SET (in;
// NOTIFY NONE is the zero Interest): from then on s is told what in asks
// for, as soon as it can be written to (RFC 5465). What was queued for it
// before is dropped. With in.Status, the STATUS of each mailbox in asks
// about is read now through user (the session's own handle on the store)
// and written before SetNotify returns, in the store's LIST order, so
// before NOTIFY's tagged OK (RFC 5465 section 3.1), and recorded as told.
// It is called from the session's command goroutine; it reports an error
// when the store cannot be read or the client is gone.
func (r *Registry) SetNotify(s *Session, in mapping.Interest, user backend.User) error {
	var initial []initialStatus
	if in.Status {
		var err error
		if initial, err = r.initialStatus(s, in, user); err != nil {
			return err
		}
	}
	r.mu.Lock()
	if a := r.accounts[s.account]; a != nil && a.sessions[s.id] == s && !in.Empty() && a.names == nil && !r.closed {
		// The account was learnt for plain clients that are told nothing
		// beyond their selected mailbox: learn its mailboxes now.
		a.baseline = true
		a.scheduleLocked(r)
	}
	r.mu.Unlock()
	return s.setNotify(in, initial)
}

// initialStatus is one STATUS value that NOTIFY SET STATUS tells.
type initialStatus struct {
	mailbox string
	status  mapping.Status
}

// initialStatus reads the STATUS values that NOTIFY SET STATUS asks for:
// each selectable mailbox but the selected one for which in wants message
// events, in the store's LIST order.
func (r *Registry) initialStatus(s *Session, in mapping.Interest, user backend.User) ([]initialStatus, error) {
	infos, err := ListMailboxes(user)
	if err != nil {
		return nil, err
	}
	selected := s.Selected()
	items := mapping.InitialStatusItems(r.policy.StatusItems).Request()
	var out []initialStatus
	for _, info := range infos {
		if mapping.HasAttr(info.Attributes, imap.NoSelectAttr) || mapping.HasAttr(info.Attributes, mapping.AttrNonExistent) {
			continue
		}
		facts := mapping.MailboxFacts{Name: info.Name, Delimiter: info.Delimiter,
			Selected: selected != "" && mapping.SameMailbox(info.Name, selected), Subscribed: mapping.IsSubscribed(info.Attributes)}
		if !in.InitialStatus(facts) {
			continue
		}
		st, err := user.Status(info.Name, items)
		if err != nil {
			if errors.Is(err, backend.ErrNoSuchMailbox) {
				continue // deleted meanwhile
			}
			return nil, err
		}
		out = append(out, initialStatus{mailbox: info.Name, status: mapping.StatusOf(st)})
	}
	return out, nil
}

// setNotify is Registry.SetNotify for this session.
func (s *Session) setNotify(in mapping.Interest, initial []initialStatus) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return ErrClosed
	}
	// What was due for the plain session is not what the client asks for
	// now; only the store's announcement of new messages stays (the FETCH
	// that follows EXISTS, if the new request asks for one).
	s.dropLocked()
	s.notify = &in
	s.mu.Unlock()

	if len(initial) > 0 {
		if s.view == nil {
			s.view = mapping.NewStatusView(s.reg.policy.StatusItems)
		}
		// With the items RFC 5465 requires there; the view records the
		// values of the items it tells later.
		items := mapping.InitialStatusItems(s.reg.policy.StatusItems)
		lines := make([][]byte, 0, len(initial))
		for _, st := range initial {
			s.view.Forget(st.mailbox)
			s.view.Update(st.mailbox, st.status)
			lines = append(lines, mapping.StatusLine(st.mailbox, items, st.status))
		}
		if err := s.out.Write(lines); err != nil {
			return err
		}
		s.lastWrite.Store(time.Now().UnixNano())
		s.reg.metrics.Pushed("STATUS", len(lines))
	}
	s.mu.Lock()
	s.kickLocked()
	s.mu.Unlock()
	return nil
}

// notificationsLost records that events for the session may have been
// lost (a broker reconnect): a NOTIFY client is told with
// NOTIFICATIONOVERFLOW and then told nothing until its next NOTIFY SET.
// It is called with Registry.mu held.
func (s *Session) notificationsLost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || s.notify == nil || s.notify.Empty() {
		return
	}
	s.dropLocked()
	s.lost = true
	s.kickLocked()
}
