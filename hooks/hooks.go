// SPDX-License-Identifier: GPL-3.0-or-later

// Package hooks decorates the go-imap backend objects (users and mailboxes)
// of the storage that storage.notify wraps.
//
// It owns the forwarding contract: every method that go-imap's server, its
// extensions (MOVE, SORT, THREAD, NAMESPACE, APPENDLIMIT) or maddy's CLI look
// for on a User or Mailbox, by interface or by type assertion, is written out
// here and forwarded to the inner object, so that a client sees exactly what
// the inner store gives it. Where the inner object lacks an optional method,
// the decorator answers as the caller would have done without it.
//
// hooks imports no other package of this module; it must not import the
// module root, and it does no I/O of its own.
package hooks

import (
	"errors"
	"time"

	"github.com/emersion/go-imap"
	sortthread "github.com/emersion/go-imap-sortthread"
	"github.com/emersion/go-imap/backend"
	namespace "github.com/foxcpp/go-imap-namespace"
)

// appendLimiter is the optional append-limit pair of go-imap-sql users and
// mailboxes (maddy's `imap-acct appendlimit` and the backend tests use it).
type appendLimiter interface {
	CreateMessageLimit() *uint32
	SetMessageLimit(val *uint32) error
}

// specialUseCreator is what maddy's `imap-acct create` looks for to create
// the special-use mailboxes of a new account.
type specialUseCreator interface {
	CreateMailboxSpecial(name, specialUseAttr string) error
}

// errNoAppendLimit answers SetMessageLimit when the inner object has no limit.
var errNoAppendLimit = errors.New("notify: the wrapped storage does not support append limits")

// errMoveUnsupported is the error go-imap's server gives for MOVE on a
// mailbox without backend.MoveMailbox.
var errMoveUnsupported = errors.New("MOVE extension not supported")

// User decorates the backend.User of the inner storage.
//
// A User is used by one IMAP session (or one CLI/delivery operation) at a
// time, like the inner user it wraps; its methods are called from that
// session's goroutine.
type User struct {
	inner backend.User
}

var (
	_ backend.User            = (*User)(nil)
	_ backend.AppendLimitUser = (*User)(nil)
	_ appendLimiter           = (*User)(nil)
	_ specialUseCreator       = (*User)(nil)
	_ namespace.User          = (*User)(nil)
)

// WrapUser returns the decorator of u. u must not be nil.
func WrapUser(u backend.User) *User {
	if u == nil {
		panic("hooks: WrapUser(nil)")
	}
	return &User{inner: u}
}

// Inner returns the wrapped user.
func (u *User) Inner() backend.User { return u.inner }

// Username returns the storage account name of the inner user.
func (u *User) Username() string { return u.inner.Username() }

// ListMailboxes forwards to the inner user.
func (u *User) ListMailboxes(subscribed bool) ([]imap.MailboxInfo, error) {
	return u.inner.ListMailboxes(subscribed)
}

// GetMailbox opens a mailbox of the inner user.
//
// With a nil conn (maddy's CLI, deliveries and other management access) the
// inner mailbox is returned as it is: `maddy imap-msgs remove` asserts the
// concrete go-imap-sql type on it. With a conn (an IMAP session's SELECT or
// EXAMINE) the mailbox is decorated.
func (u *User) GetMailbox(name string, readOnly bool, conn backend.Conn) (*imap.MailboxStatus, backend.Mailbox, error) {
	status, mbox, err := u.inner.GetMailbox(name, readOnly, conn)
	if err != nil || conn == nil {
		return status, mbox, err
	}
	return status, &Mailbox{inner: mbox}, nil
}

// Status forwards to the inner user.
func (u *User) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	return u.inner.Status(mbox, items)
}

// SetSubscribed forwards to the inner user.
func (u *User) SetSubscribed(mbox string, subscribed bool) error {
	return u.inner.SetSubscribed(mbox, subscribed)
}

// CreateMessage forwards to the inner user. A decorated selectedMailbox is
// unwrapped first, since the inner store may compare it with its own handles.
func (u *User) CreateMessage(mbox string, flags []string, date time.Time, body imap.Literal, selectedMailbox backend.Mailbox) error {
	if m, ok := selectedMailbox.(*Mailbox); ok {
		selectedMailbox = m.inner
	}
	return u.inner.CreateMessage(mbox, flags, date, body, selectedMailbox)
}

// CreateMailbox forwards to the inner user.
func (u *User) CreateMailbox(name string) error { return u.inner.CreateMailbox(name) }

// CreateMailboxSpecial forwards to the inner user; without support there it
// creates a plain mailbox, as maddy's CLI does for such stores.
func (u *User) CreateMailboxSpecial(name, specialUseAttr string) error {
	if s, ok := u.inner.(specialUseCreator); ok {
		return s.CreateMailboxSpecial(name, specialUseAttr)
	}
	return u.inner.CreateMailbox(name)
}

// DeleteMailbox forwards to the inner user.
func (u *User) DeleteMailbox(name string) error { return u.inner.DeleteMailbox(name) }

// RenameMailbox forwards to the inner user.
func (u *User) RenameMailbox(existingName, newName string) error {
	return u.inner.RenameMailbox(existingName, newName)
}

// Logout forwards to the inner user.
func (u *User) Logout() error { return u.inner.Logout() }

// CreateMessageLimit returns the inner user's append limit, or nil (no
// limit) where it has none: go-imap then advertises plain APPENDLIMIT, as it
// does for a user without backend.AppendLimitUser.
func (u *User) CreateMessageLimit() *uint32 {
	if l, ok := u.inner.(appendLimiter); ok {
		return l.CreateMessageLimit()
	}
	if l, ok := u.inner.(backend.AppendLimitUser); ok {
		return l.CreateMessageLimit()
	}
	return nil
}

// SetMessageLimit forwards to the inner user.
func (u *User) SetMessageLimit(val *uint32) error {
	if l, ok := u.inner.(appendLimiter); ok {
		return l.SetMessageLimit(val)
	}
	return errNoAppendLimit
}

// Namespaces forwards to the inner user. For a user without namespace
// support it answers what go-imap-namespace answers for such a user: one
// personal namespace with the delimiter of the first mailbox, if any.
func (u *User) Namespaces() (personal, other, shared []namespace.Namespace, err error) {
	if n, ok := u.inner.(namespace.User); ok {
		return n.Namespaces()
	}
	info, err := u.inner.ListMailboxes(false)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(info) != 0 {
		personal = []namespace.Namespace{{Prefix: "", Delimiter: info[0].Delimiter}}
	}
	return personal, nil, nil, nil
}

// Mailbox decorates a selected (or examined) mailbox of the inner storage.
// Its methods are called from the owning session's goroutine, except where a
// method says otherwise.
type Mailbox struct {
	inner backend.Mailbox
}

var (
	_ backend.Mailbox          = (*Mailbox)(nil)
	_ backend.MoveMailbox      = (*Mailbox)(nil)
	_ sortthread.SortMailbox   = (*Mailbox)(nil)
	_ sortthread.ThreadMailbox = (*Mailbox)(nil)
	_ appendLimiter            = (*Mailbox)(nil)
)

// Inner returns the wrapped mailbox.
func (m *Mailbox) Inner() backend.Mailbox { return m.inner }

// Name forwards to the inner mailbox.
func (m *Mailbox) Name() string { return m.inner.Name() }

// Info forwards to the inner mailbox.
func (m *Mailbox) Info() (*imap.MailboxInfo, error) { return m.inner.Info() }

// Close forwards to the inner mailbox.
func (m *Mailbox) Close() error { return m.inner.Close() }

// Poll forwards to the inner mailbox.
func (m *Mailbox) Poll(expunge bool) error { return m.inner.Poll(expunge) }

// ListMessages forwards to the inner mailbox.
func (m *Mailbox) ListMessages(uid bool, seqset *imap.SeqSet, items []imap.FetchItem, ch chan<- *imap.Message) error {
	return m.inner.ListMessages(uid, seqset, items, ch)
}

// SearchMessages forwards to the inner mailbox.
func (m *Mailbox) SearchMessages(uid bool, criteria *imap.SearchCriteria) ([]uint32, error) {
	return m.inner.SearchMessages(uid, criteria)
}

// UpdateMessagesFlags forwards to the inner mailbox.
func (m *Mailbox) UpdateMessagesFlags(uid bool, seqset *imap.SeqSet, operation imap.FlagsOp, silent bool, flags []string) error {
	return m.inner.UpdateMessagesFlags(uid, seqset, operation, silent, flags)
}

// CopyMessages forwards to the inner mailbox.
func (m *Mailbox) CopyMessages(uid bool, seqset *imap.SeqSet, dest string) error {
	return m.inner.CopyMessages(uid, seqset, dest)
}

// MoveMessages forwards to the inner mailbox; without MOVE support there it
// fails as go-imap's server fails for such a mailbox.
func (m *Mailbox) MoveMessages(uid bool, seqset *imap.SeqSet, dest string) error {
	if mv, ok := m.inner.(backend.MoveMailbox); ok {
		return mv.MoveMessages(uid, seqset, dest)
	}
	return errMoveUnsupported
}

// Expunge forwards to the inner mailbox.
func (m *Mailbox) Expunge() error { return m.inner.Expunge() }

// Idle forwards to the inner mailbox. done receives one value when the
// client ends IDLE; it is the inner mailbox's to take.
func (m *Mailbox) Idle(done <-chan struct{}) { m.inner.Idle(done) }

// Sort forwards to the inner mailbox; without SORT support there it fails as
// go-imap-sortthread fails for such a mailbox.
func (m *Mailbox) Sort(uid bool, sortCrit []sortthread.SortCriterion, searchCrit *imap.SearchCriteria) ([]uint32, error) {
	if s, ok := m.inner.(sortthread.SortMailbox); ok {
		return s.Sort(uid, sortCrit, searchCrit)
	}
	return nil, sortthread.ErrUnsupportedBackend
}

// Thread forwards to the inner mailbox; without THREAD support there it
// fails as go-imap-sortthread fails for such a mailbox.
func (m *Mailbox) Thread(uid bool, threading sortthread.ThreadAlgorithm, searchCrit *imap.SearchCriteria) ([]*sortthread.Thread, error) {
	if t, ok := m.inner.(sortthread.ThreadMailbox); ok {
		return t.Thread(uid, threading, searchCrit)
	}
	return nil, sortthread.ErrUnsupportedBackend
}

// CreateMessageLimit forwards to the inner mailbox, nil where it has none.
func (m *Mailbox) CreateMessageLimit() *uint32 {
	if l, ok := m.inner.(appendLimiter); ok {
		return l.CreateMessageLimit()
	}
	return nil
}

// SetMessageLimit forwards to the inner mailbox.
func (m *Mailbox) SetMessageLimit(val *uint32) error {
	if l, ok := m.inner.(appendLimiter); ok {
		return l.SetMessageLimit(val)
	}
	return errNoAppendLimit
}
