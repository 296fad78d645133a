// SPDX-License-Identifier: GPL-3.0-or-later

// Package registry owns the IMAP sessions that receive notifications and
// the per-account work that feeds them.
//
// Events come in through Publish (from the storage decorators in hooks, the
// delivery wrapper and the brokers of package bus); the registry hands them
// to the sessions of the event's account only. A message event makes the
// account's worker query the STATUS of its mailbox (one query per account
// and burst, shared by its sessions); the account keeps the newest value of
// each mailbox with a version (account.go), and a session that is woken
// compares it with what its client was told. Mailbox events (LIST) are
// queued per session in order (names.go holds the mailbox lists). Every
// session's queue is bounded; while its client IDLEs, or at any time for a
// client that sent NOTIFY, a goroutine writes what is due and ends when
// nothing is left, and the session's own command goroutine writes at
// NOOP/CHECK (Session.Flush, flush.go). A session has no goroutine while it
// has nothing to write. What each session is told is mapping.Map's
// decision alone.
//
// registry imports, of this module, event, mapping and metrics (a test
// holds it: imports_test.go); it must not import hooks, bus or the module
// root. Everything it starts belongs to the Registry and ends in Close.
package registry

import (
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/emersion/go-imap/backend"
	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/metrics"
)

// QueueLimit is the number of items a session queues before it is
// resynchronised by state instead (Session docs).
const QueueLimit = 512

// ErrClosed is returned by Out implementations when the connection or the
// registry is gone.
var ErrClosed = errors.New("registry: session closed")

// Out writes complete untagged responses to one client connection. Write
// must return ErrClosed (or another error) instead of blocking forever once
// the client has logged out or the registry is closing.
type Out interface {
	Write(lines [][]byte) error
	// LoggedOut is closed when the client's connection is gone.
	LoggedOut() <-chan struct{}
}

// Fetcher sends the FETCH lines of the new messages of the session's
// selected mailbox: the ones announced (EXISTS) and not yet fetched, with
// the given items, through write (which the Fetcher calls so that no store
// update can come between reading sequence numbers and writing them). It
// reports complete=false when an announced message cannot be read yet (the
// caller retries); with giveUp it skips such messages. It is called from
// the session's writer goroutine or its command goroutine, never from
// inside the store's update callback.
type Fetcher interface {
	FetchNew(items mapping.FetchItems, write func([][]byte) error, giveUp bool) (complete bool, err error)
}

// Opener gives the registry its own handle on an account of the inner
// store, for STATUS and LIST queries.
type Opener func(account string) (backend.User, error)

// Registry is the set of sessions of one storage.notify block.
// Its methods may be called from any goroutine.
type Registry struct {
	policy  mapping.Policy
	open    Opener
	batch   BatchStatus // nil: one Status query per mailbox (batch.go)
	log     log.Logger
	metrics *metrics.Set

	mu       sync.Mutex
	accounts map[string]*account
	closed   bool

	hierMu sync.Mutex
	hier   map[string]*hierarchyLock

	stop chan struct{}
	// goMu guards stopped, which Close sets before it waits for wg: no
	// goroutine of the registry starts after that (goSafe).
	goMu    sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// New returns an empty registry that applies policy and queries the inner
// store through open.
func New(policy mapping.Policy, open Opener, logger log.Logger) *Registry {
	return &Registry{
		policy:   policy,
		open:     open,
		log:      logger,
		accounts: map[string]*account{},
		stop:     make(chan struct{}),
	}
}

// SetMetrics makes the registry record its metrics in m. Call it before the
// first Register.
func (r *Registry) SetMetrics(m *metrics.Set) { r.metrics = m }

// goSafe runs f in a goroutine owned by the registry: it recovers panics
// (logged with their stack, what and name say whose) and is waited for by
// Close. It reports false, and does not run f, once Close has begun. It may
// be called with any of the registry's or a session's locks held.
func (r *Registry) goSafe(what, name string, f func()) bool {
	r.goMu.Lock()
	if r.stopped {
		r.goMu.Unlock()
		return false
	}
	r.wg.Add(1)
	r.goMu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			if p := recover(); p != nil {
				r.log.Printf("panic in %s %s: %v\n%s", what, name, p, debug.Stack())
			}
		}()
		f()
	}()
	return true
}

// Close stops every goroutine of the registry and waits for them. Sessions
// get nothing more; Register and Publish become no-ops.
func (r *Registry) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.stop)
	r.goMu.Lock()
	r.stopped = true
	r.goMu.Unlock()
	accts := r.accounts
	r.accounts = map[string]*account{}
	for _, a := range accts {
		for _, s := range a.sessions {
			s.leave()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	for _, a := range accts {
		a.logout(r)
	}
}

// Sessions returns the number of registered sessions (for metrics/tests).
func (r *Registry) Sessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.accounts {
		n += len(a.sessions)
	}
	return n
}

// Register adds the session id of account, writing to out. The caller then
// keeps the session's view current (Select, SetIdle) and calls Unregister
// when it logs out (and when its connection closes); a session whose write
// fails leaves too, and so does one whose Out reports LoggedOut when it is
// next handed something or enters IDLE. Register on a closed registry
// returns a session that is never told anything.
func (r *Registry) Register(acct string, id uint64, out Out) *Session {
	s := &Session{
		reg:     r,
		id:      id,
		account: acct,
		out:     out,
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		s.leave()
		return s
	}
	a := r.accounts[acct]
	if a == nil {
		// The account's first session: learn the current state of its
		// mailboxes before the session is registered, so that a later
		// reconciliation (an SMTP delivery) tells it exactly what changed
		// since. This runs on the SELECT's goroutine, once per account.
		r.mu.Unlock()
		fresh := r.newAccount(acct)
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			fresh.logout(r)
			s.leave()
			return s
		}
		if a = r.accounts[acct]; a == nil {
			a = fresh
			r.accounts[acct] = a
			if a.baseline {
				a.scheduleLocked(r)
			}
		} else {
			defer fresh.logout(r) // another session's registration won
		}
	}
	a.sessions[id] = s
	a.sessionGen++
	// Versions of the account's STATUS values up to now were made before
	// the session came: none is its own change (statusEntry.ownSince).
	s.baseVersion = a.version
	// What its client may know: the list at its SELECT, shared with the
	// account until one of them changes it.
	s.names, s.namesGen = a.names, a.namesGen
	a.namesShared = true
	r.mu.Unlock()
	r.metrics.SessionsAdd(1)
	return s
}

// Unregister removes s; it is idempotent.
func (r *Registry) Unregister(s *Session) {
	r.mu.Lock()
	a := r.accounts[s.account]
	var last *account
	if a != nil && a.sessions[s.id] == s {
		delete(a.sessions, s.id)
		r.metrics.SessionsAdd(-1)
		s.SetIdle(false)
		if len(a.sessions) == 0 && !a.running {
			delete(r.accounts, s.account)
			last = a
		}
	}
	r.mu.Unlock()
	s.leave()
	if last != nil {
		last.logout(r)
	}
}

// Publish hands ev to the sessions of its account. It never blocks on a
// client or on the store: message events are queued for the account's
// STATUS work, mailbox events for each session. The change must be
// committed in the store when its event is published, and ev.Time, when it
// is read from this process's clock, must be no earlier than the commit
// (the hooks stamp events after the store call returned): a STATUS query
// that started later has seen the change and is not repeated for it.
func (r *Registry) Publish(ev event.Event) {
	if err := ev.Validate(); err != nil {
		r.log.Error("dropping invalid event", err, "event", ev.String())
		return
	}
	if !r.policy.Events.Has(ev.Kind) {
		return
	}
	if ev.Kind == event.FlagChange && !r.policy.StatusItems.FlagDependent() {
		return // no STATUS item can change (mapping.ReasonNoFlagItems)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[ev.Account]
	if a == nil || r.closed {
		return
	}
	if r.log.Debug {
		r.log.DebugMsg("event", "event", ev.String(), "sessions", len(a.sessions))
	}
	tells := a.tellsLocked(r)
	if !tells && a.names != nil {
		// Nobody is told while the account's state is not kept: it is
		// learnt again when someone is (SetNotify).
		a.names, a.namesShared = nil, false
		clear(a.status)
		clear(a.queried)
	}
	if ev.Kind.IsMessage() {
		if tells {
			a.addPendingLocked(ev.Mailbox, ev.Origin, ev.Time, mayBeUnchanged(ev.Kind))
			a.scheduleLocked(r)
		}
		if ev.Kind == event.MessageAppend || ev.Kind == event.MessageNew {
			// The store has committed the new messages: a FETCH that
			// found them unreadable need not wait for its backoff.
			for _, s := range a.sessions {
				s.committed(ev.Mailbox)
			}
		}
		return
	}
	if !tells {
		return // nobody is told about the mailbox list (mapping.PlainClients)
	}
	wasSubscribed, _ := subscribedIn(a.names, mapping.MailboxKey(ev.Mailbox))
	a.applyMailboxEventLocked(r, ev)
	if len(a.pending) > 0 {
		a.scheduleLocked(r) // a RENAME queries the new name
	}
	it := item{ev: ev, at: ev.Time}
	// NOTIFY's subscribed filter: whether the mailbox is subscribed now
	// (for a deletion, whether it was).
	it.subscribed = ev.Subscribed
	if ev.Kind == event.MailboxDelete {
		it.subscribed = wasSubscribed
	}
	if a.names != nil && len(a.sessions) > 0 {
		// The sessions take this version when they are handed ev.
		it.names, it.namesGen = a.names, a.namesGen
		a.namesShared = true
	}
	for _, s := range a.sessions {
		s.enqueue(it)
	}
}

// Reconcile asks for a fresh STATUS of every mailbox in scope of account's
// sessions; sessions are told what changed since they were last told. It is
// how changes whose mailbox the module cannot see (SMTP delivery through
// imap_filter) reach the clients.
func (r *Registry) Reconcile(acct string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[acct]
	if a == nil || r.closed || !a.tellsLocked(r) {
		return
	}
	a.reconcile = true
	if a.since.IsZero() {
		// The delivery committed just now: the STATUS lines it causes
		// get a push latency sample like those of IMAP changes.
		a.since = time.Now()
	}
	a.scheduleLocked(r)
}

// ResyncAll reconciles every account after notifications may have been
// lost (a broker reconnect): sessions get a fresh STATUS where values
// changed and LIST lines for mailboxes created or deleted meanwhile.
func (r *Registry) ResyncAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.metrics.Resync("reconnect")
	for _, a := range r.accounts {
		// A NOTIFY client is told that notifications were lost (RFC 5465
		// section 5.8) and asks again.
		for _, s := range a.sessions {
			s.notificationsLost()
		}
		if !r.policy.Plain.TellsMailboxes() {
			continue
		}
		a.reconcile, a.relist = true, true
		a.scheduleLocked(r)
	}
}

// HasAccount reports whether any session of acct is registered.
func (r *Registry) HasAccount(acct string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accounts[acct] != nil
}

// StartKeepalive makes the registry write "* OK Still here" to every
// idling client that was written nothing for every (the store's lines and
// the module's count), so that NAT and mobile networks keep the connection
// open. It starts one goroutine for all sessions, which ends in Close; call
// it once, after New. every <= 0 turns keepalives off.
func (r *Registry) StartKeepalive(every time.Duration) {
	if every <= 0 {
		return
	}
	// Checked eight times an interval: a client is written a keepalive
	// between every and 9/8 every after the last line.
	tick := every / 8
	r.goSafe("keepalive", "", func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case now := <-t.C:
				r.keepalive(now, every)
			}
		}
	})
}

// keepalive queues a keepalive for each idling session that is due.
func (r *Registry) keepalive(now time.Time, every time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.accounts {
		for _, s := range a.sessions {
			s.keepaliveDue(now, every)
		}
	}
}

// Done is closed when the registry is closing; writers select on it so that
// nothing blocks shutdown.
func (r *Registry) Done() <-chan struct{} { return r.stop }
