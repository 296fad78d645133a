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
// It also reports what the decorated calls changed: after a successful
// call it publishes an event to the registry (APPEND, COPY, MOVE, EXPUNGE,
// STORE, CREATE, DELETE, RENAME, SUBSCRIBE), registers the IMAP session
// that selected a mailbox, and tells it when it IDLEs, polls, and when the
// store announces new messages to it. With a publisher and no registry
// (maddy's CLI, which hands the events to the running server) the
// decorators publish and register nothing; with neither they only forward.
//
// Of this module, hooks depends on event, mapping, metrics and registry
// only (imports_test.go holds it): it must not import bus, config or the
// module root.
package hooks

import (
	"errors"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	sortthread "github.com/emersion/go-imap-sortthread"
	"github.com/emersion/go-imap/backend"
	namespace "github.com/foxcpp/go-imap-namespace"
	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
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
	reg   *registry.Registry
	pub   Publisher
	id    uint64
	stall time.Duration // see DefaultStallTimeout

	mu      sync.Mutex
	session *registry.Session
	guard   *stallGuard // of the session's connection
	out     *connOut    // the session's writer to its connection
	log     log.Logger  // WithLog; maddy's default logger until then
}

var (
	_ backend.User            = (*User)(nil)
	_ backend.AppendLimitUser = (*User)(nil)
	_ appendLimiter           = (*User)(nil)
	_ specialUseCreator       = (*User)(nil)
	_ namespace.User          = (*User)(nil)
)

// Publisher takes the events the decorators report (the module's bus).
type Publisher interface {
	Publish(ev event.Event)
}

// UnobservedPublisher is a Publisher that also wants to know when the
// decorators hand out a mailbox undecorated (GetMailbox without a
// connection, as maddy's `imap-msgs` commands call it), so that the
// changes made through it, which no event reports, can be reconciled by
// state later (the module's CLI side does so when maddy closes the store).
type UnobservedPublisher interface {
	Publisher
	// Unobserved says that account's mailbox was handed out undecorated.
	// It is called from the caller's goroutine before GetMailbox returns.
	Unobserved(account, mailbox string)
}

// WrapUser returns the decorator of u. u must not be nil. reg receives the
// user's sessions and pub its events; a nil reg with a pub publishes
// without sessions (maddy's CLI), both nil forwards only, and a reg needs
// a pub. id is the opaque, process-unique id of this login, the Origin of
// its events; stall is how long the store's write of an update to the
// session's client may wait before the client is disconnected (0:
// DefaultStallTimeout).
func WrapUser(u backend.User, reg *registry.Registry, pub Publisher, id uint64, stall time.Duration) *User {
	if u == nil {
		panic("hooks: WrapUser(nil)")
	}
	if reg != nil && pub == nil {
		panic("hooks: WrapUser with a registry needs a publisher")
	}
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	return &User{inner: u, reg: reg, pub: pub, id: id, stall: stall}
}

// WithLog makes u log with l (the module's logger) and returns u. Call it
// before u is used.
func (u *User) WithLog(l log.Logger) *User {
	u.log = l
	return u
}

// Username returns the storage account name of the inner user.
func (u *User) Username() string { return u.inner.Username() }

// ListMailboxes forwards to the inner user.
func (u *User) ListMailboxes(subscribed bool) ([]imap.MailboxInfo, error) {
	return u.inner.ListMailboxes(subscribed)
}

// GetMailbox opens a mailbox of the inner user.
//
// With a nil conn (maddy's CLI, deliveries and other management access) the
// inner mailbox is returned as it is: `maddy imap-msgs remove` and `move`
// assert the concrete go-imap-sql type on it. The changes made through it
// publish no event; an UnobservedPublisher is told instead. With a conn (an IMAP session's SELECT or
// EXAMINE) the mailbox is decorated and, when conn is go-imap's server
// connection, the session is registered for notifications.
func (u *User) GetMailbox(name string, readOnly bool, conn backend.Conn) (*imap.MailboxStatus, backend.Mailbox, error) {
	if conn == nil {
		status, mbox, err := u.inner.GetMailbox(name, readOnly, conn)
		if up, ok := u.pub.(UnobservedPublisher); ok && err == nil {
			up.Unobserved(u.inner.Username(), name)
		}
		return status, mbox, err
	}
	session := u.sessionFor(conn)
	sel := &selected{blind: true}
	var innerConn backend.Conn = conn
	if session != nil {
		innerConn = &updateConn{Conn: conn, session: session, sel: sel, guard: u.guard}
	}
	status, mbox, err := u.inner.GetMailbox(name, readOnly, innerConn)
	if err != nil {
		return status, mbox, err
	}
	sel.mu.Lock()
	sel.selectedAt(status)
	sel.mu.Unlock()
	m := &Mailbox{inner: mbox, user: u, session: session, sel: sel}
	if session != nil {
		session.Select(mbox.Name(), m)
	}
	return status, m, nil
}

// sessionFor returns the registered session of this login, registering it
// on the first SELECT. Connections that are not go-imap's server
// connections (tests, tools) are not registered.
func (u *User) sessionFor(conn backend.Conn) *registry.Session {
	if u.reg == nil {
		return nil
	}
	sc, ok := conn.(serverConn)
	if !ok {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.session == nil {
		u.guard = &stallGuard{conn: conn, timeout: u.stall}
		u.out = newConnOut(sc.Context(), u.reg.Done())
		u.session = u.reg.Register(u.inner.Username(), u.id, u.out)
	}
	return u.session
}

func (u *User) publish(ev event.Event) {
	if u.pub == nil {
		return
	}
	ev.Account = u.inner.Username()
	ev.Origin = u.id
	ev.Time = time.Now()
	u.pub.Publish(ev)
}

// beginChange tells the registry that a change of the messages of the
// mailboxes is under way (registry.Registry.BeginChange); the returned end
// is called, deferred, after the change's events were published.
func (u *User) beginChange(mailboxes ...string) (end func()) {
	if u.reg == nil {
		return func() {}
	}
	ends := make([]func(), len(mailboxes))
	for i, mbox := range mailboxes {
		ends[i] = u.reg.BeginChange(u.inner.Username(), mbox)
	}
	return func() {
		for _, end := range ends {
			end()
		}
	}
}

// Status forwards to the inner user.
func (u *User) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	return u.inner.Status(mbox, items)
}

// SetSubscribed forwards to the inner user and publishes
// SubscriptionChange.
func (u *User) SetSubscribed(mbox string, subscribed bool) error {
	if u.reg != nil {
		defer u.reg.LockHierarchy(u.inner.Username())()
	}
	if err := u.inner.SetSubscribed(mbox, subscribed); err != nil {
		return err
	}
	if u.pub != nil {
		infos, err := u.listAll()
		if err != nil {
			u.log.Error("cannot list mailboxes after SUBSCRIBE; no LIST line for it", err,
				"account", u.inner.Username(), "mailbox", mbox)
		}
		// go-imap-sql answers OK to SUBSCRIBE of a mailbox that does not
		// exist and keeps nothing: there is nothing to tell.
		if info, ok := infos[mapping.MailboxKey(mbox)]; ok {
			u.publish(event.Event{Kind: event.SubscriptionChange, Mailbox: info.Name, Subscribed: subscribed,
				Delimiter: info.Delimiter, Attrs: mapping.WithoutSubscribed(info.Attributes)})
		}
	}
	return nil
}

// CreateMessage forwards to the inner user. A decorated selectedMailbox is
// unwrapped first, since the inner store may compare it with its own handles.
func (u *User) CreateMessage(mbox string, flags []string, date time.Time, body imap.Literal, selectedMailbox backend.Mailbox) error {
	if m, ok := selectedMailbox.(*Mailbox); ok {
		selectedMailbox = m.inner
	}
	defer u.beginChange(mbox)()
	if err := u.inner.CreateMessage(mbox, flags, date, body, selectedMailbox); err != nil {
		return err
	}
	u.publish(event.Event{Kind: event.MessageAppend, Mailbox: mbox})
	return nil
}

// CreateMailbox forwards to the inner user and publishes MailboxCreate for
// the mailbox and for the parents the store created with it.
func (u *User) CreateMailbox(name string) error {
	return u.hierarchyChange(func() error { return u.inner.CreateMailbox(name) }, nil)
}

// CreateMailboxSpecial forwards to the inner user; without support there it
// creates a plain mailbox, as maddy's CLI does for such stores.
func (u *User) CreateMailboxSpecial(name, specialUseAttr string) error {
	return u.hierarchyChange(func() error {
		if s, ok := u.inner.(specialUseCreator); ok {
			return s.CreateMailboxSpecial(name, specialUseAttr)
		}
		return u.inner.CreateMailbox(name)
	}, nil)
}

// DeleteMailbox forwards to the inner user and publishes MailboxDelete for
// every mailbox that is gone afterwards.
func (u *User) DeleteMailbox(name string) error {
	return u.hierarchyChange(func() error { return u.inner.DeleteMailbox(name) }, nil)
}

// RenameMailbox forwards to the inner user and publishes MailboxRename for
// the mailbox and each of its children (RENAME moves the hierarchy). RENAME
// INBOX moves INBOX's messages into a new mailbox and leaves INBOX in place:
// that is a MailboxCreate and a MessageExpunge in INBOX.
func (u *User) RenameMailbox(existingName, newName string) error {
	return u.hierarchyChange(func() error { return u.inner.RenameMailbox(existingName, newName) },
		&rename{from: existingName, to: newName})
}

// Logout removes the login's session from the registry (go-imap's server
// calls it when the connection closes) and forwards to the inner user.
func (u *User) Logout() error {
	u.mu.Lock()
	session := u.session
	u.session = nil
	u.mu.Unlock()
	if session != nil {
		u.reg.Unregister(session)
	}
	return u.inner.Logout()
}

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
	inner   backend.Mailbox
	user    *User
	session *registry.Session // nil: not registered for notifications

	// fetchMu serialises FetchNew; sel is shared with the connection the
	// inner mailbox sends its updates to.
	fetchMu sync.Mutex
	sel     *selected
}

var (
	_ backend.Mailbox          = (*Mailbox)(nil)
	_ backend.MoveMailbox      = (*Mailbox)(nil)
	_ sortthread.SortMailbox   = (*Mailbox)(nil)
	_ sortthread.ThreadMailbox = (*Mailbox)(nil)
	_ appendLimiter            = (*Mailbox)(nil)
)

// Name forwards to the inner mailbox.
func (m *Mailbox) Name() string { return m.inner.Name() }

// Info forwards to the inner mailbox.
func (m *Mailbox) Info() (*imap.MailboxInfo, error) { return m.inner.Info() }

// Close forwards to the inner mailbox and records that the session left it.
func (m *Mailbox) Close() error {
	if m.session != nil {
		m.session.Unselect(m.inner.Name())
	}
	return m.inner.Close()
}

// Poll forwards to the inner mailbox (NOOP, CHECK, after commands), which
// sends the store's EXISTS/EXPUNGE/FETCH; then the session's queued
// notifications are written, before the command's tagged response.
func (m *Mailbox) Poll(expunge bool) error {
	err := m.inner.Poll(expunge)
	if m.session != nil {
		m.session.Flush()
	}
	return err
}

func (m *Mailbox) publish(kind event.Kind, mailbox string) {
	m.user.publish(event.Event{Kind: kind, Mailbox: mailbox})
}

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
	defer m.user.beginChange(m.inner.Name())()
	if err := m.inner.UpdateMessagesFlags(uid, seqset, operation, silent, flags); err != nil {
		return err
	}
	m.publish(event.FlagChange, m.inner.Name())
	return nil
}

// CopyMessages forwards to the inner mailbox.
func (m *Mailbox) CopyMessages(uid bool, seqset *imap.SeqSet, dest string) error {
	defer m.user.beginChange(dest)()
	if err := m.inner.CopyMessages(uid, seqset, dest); err != nil {
		return err
	}
	m.publish(event.MessageAppend, dest)
	return nil
}

// MoveMessages forwards to the inner mailbox; without MOVE support there it
// fails as go-imap's server fails for such a mailbox.
func (m *Mailbox) MoveMessages(uid bool, seqset *imap.SeqSet, dest string) error {
	mv, ok := m.inner.(backend.MoveMailbox)
	if !ok {
		return errMoveUnsupported
	}
	defer m.user.beginChange(dest, m.inner.Name())()
	if err := mv.MoveMessages(uid, seqset, dest); err != nil {
		return err
	}
	m.publish(event.MessageAppend, dest)
	m.publish(event.MessageExpunge, m.inner.Name())
	return nil
}

// Expunge forwards to the inner mailbox (EXPUNGE, CLOSE).
func (m *Mailbox) Expunge() error {
	defer m.user.beginChange(m.inner.Name())()
	if err := m.inner.Expunge(); err != nil {
		return err
	}
	m.publish(event.MessageExpunge, m.inner.Name())
	return nil
}

// Idle forwards to the inner mailbox and marks the session idling for as
// long as the inner Idle runs. done receives one value when the client ends
// IDLE; it is the inner mailbox's to take.
func (m *Mailbox) Idle(done <-chan struct{}) {
	if m.session == nil {
		m.inner.Idle(done)
		return
	}
	m.session.SetIdle(true)
	defer m.session.EndIdle()
	m.inner.Idle(done)
}

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
