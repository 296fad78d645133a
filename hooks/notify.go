// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"errors"

	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// ErrNoNotifications answers NOTIFY when the module cannot notify this
// login (maddy's CLI, or a connection that is not go-imap's server
// connection).
var ErrNoNotifications = errors.New("notifications are not available for this session")

// SetNotify applies a NOTIFY SET (or NOTIFY NONE: the zero Interest) of
// the login's IMAP session on conn, registering the session if it has not
// selected a mailbox yet (RFC 5465 works in authenticated state too). With
// in.Status, the STATUS of each mailbox the request asks about is read
// through the login's handle on the store and written before it returns,
// so before NOTIFY's tagged OK (registry.Registry.SetNotify). It is called
// from the session's command goroutine (the NOTIFY command's handler).
func (u *User) SetNotify(conn backend.Conn, in mapping.Interest) error {
	session := u.sessionFor(conn)
	if session == nil {
		return ErrNoNotifications
	}
	return u.reg.SetNotify(session, in, u.inner)
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
