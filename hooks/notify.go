// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"errors"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

// ErrNoNotifications answers NOTIFY when the module cannot notify this
// login (maddy's CLI, or a connection that is not go-imap's server
// connection).
var ErrNoNotifications = errors.New("notifications are not available for this session")

// SetNotify applies a NOTIFY SET (or NOTIFY NONE: the zero Interest) of
// the login's IMAP session on conn, registering the session if it has not
// selected a mailbox yet (RFC 5465 works in authenticated state too). With
// in.Status, the STATUS of each mailbox the request asks about is read now
// and written before it returns, so before NOTIFY's tagged OK (RFC 5465
// section 3.1). It is called from the session's command goroutine (the
// NOTIFY command's handler).
func (u *User) SetNotify(conn backend.Conn, in mapping.Interest) error {
	session := u.sessionFor(conn)
	if session == nil {
		return ErrNoNotifications
	}
	var initial []registry.InitialStatus
	if in.Status {
		var err error
		if initial, err = u.initialStatus(session, in); err != nil {
			return err
		}
	}
	return u.reg.SetNotify(session, in, initial)
}

// initialStatus reads the STATUS values that NOTIFY SET STATUS asks for:
// each selectable mailbox but the selected one for which in wants message
// events, in the store's LIST order.
func (u *User) initialStatus(session *registry.Session, in mapping.Interest) ([]registry.InitialStatus, error) {
	infos, err := registry.ListMailboxes(u.inner)
	if err != nil {
		return nil, err
	}
	selected := session.Selected()
	items := mapping.InitialStatusItems(u.reg.Policy().StatusItems).Request()
	var out []registry.InitialStatus
	for _, info := range infos {
		if mapping.HasAttr(info.Attributes, imap.NoSelectAttr) || mapping.HasAttr(info.Attributes, mapping.AttrNonExistent) {
			continue
		}
		facts := mapping.MailboxFacts{Name: info.Name, Delimiter: info.Delimiter,
			Selected: selected != "" && mapping.SameMailbox(info.Name, selected), Subscribed: mapping.IsSubscribed(info.Attributes)}
		if !in.InitialStatus(facts) {
			continue
		}
		st, err := u.inner.Status(info.Name, items)
		if err != nil {
			if errors.Is(err, backend.ErrNoSuchMailbox) {
				continue // deleted meanwhile
			}
			return nil, err
		}
		out = append(out, registry.InitialStatus{Mailbox: info.Name, Status: mapping.StatusOf(st)})
	}
	return out, nil
}

// HoldPushes keeps the module's lines to the session's client back until
// the returned release is called (COMPRESS: the connection's stream changes
// under it, see imapext). It returns once a write under way is done. It is
// called from the session's command goroutine; release may be called from
// any goroutine, more than once.
func (u *User) HoldPushes() (release func()) {
	u.mu.Lock()
	out := u.out
	u.mu.Unlock()
	if out == nil {
		return func() {}
	}
	return out.hold()
}
