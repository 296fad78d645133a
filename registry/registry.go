// SPDX-License-Identifier: GPL-3.0-or-later

// Package registry owns the IMAP sessions that receive notifications and
// the per-account work that feeds them.
//
// Events come in through Publish (from the storage decorators in hooks, the
// delivery wrapper and, later, a broker); the registry hands them to the
// sessions of the event's account only. Message events in a mailbox become
// one STATUS query per account and burst (an account's sessions share it);
// mailbox events (LIST) go to each session's queue as they are. Every
// session has a bounded queue; while its client IDLEs, a goroutine writes
// what is queued to its connection and ends when the queue is empty, and the
// session's own command goroutine writes at NOOP/CHECK (Session.Flush). A
// session has no goroutine while it has nothing to write. mapping decides
// what each session is told.
//
// registry depends on event, mapping and metrics of this module (a test
// holds it); it must not import hooks or the
// module root. Everything it starts belongs to the Registry and ends in
// Close.
package registry

import (
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap"
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

	// takeWait bounds how long an account's worker waits for a session to
	// take the last value of a mailbox before it queries the mailbox again
	// (account.awaitTaken). Sessions that idle take a value as soon as
	// their writer runs, within microseconds; the bound is for a writer
	// that does not come (its client has stopped reading).
	takeWait time.Duration
	// doubtWait bounds how long the worker holds back the query of changes
	// that the last query of their mailbox may have seen, waiting for
	// another change to share a query with (account.awaitDoubt).
	doubtWait time.Duration
}

// New returns an empty registry that applies policy and queries the inner
// store through open.
func New(policy mapping.Policy, open Opener, logger log.Logger) *Registry {
	return &Registry{
		policy:    policy,
		open:      open,
		log:       logger,
		accounts:  map[string]*account{},
		stop:      make(chan struct{}),
		takeWait:  5 * time.Millisecond,
		doubtWait: 5 * time.Millisecond,
	}
}

// SetMetrics makes the registry record its metrics in m. Call it before the
// first Register.
func (r *Registry) SetMetrics(m *metrics.Set) { r.metrics = m }

// Policy returns the policy the registry applies.
func (r *Registry) Policy() mapping.Policy { return r.policy }

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
	// What its client may know: the list at its SELECT, shared with the
	// account until one of them changes it.
	s.names, s.namesGen = a.names, a.namesGen
	a.namesShared = true
	r.mu.Unlock()
	r.metrics.SessionsAdd(1)
	return s
}

// newAccount returns the state of an account that has no session yet, with
// its mailbox list and the STATUS of the mailboxes in scope learnt. If the
// store cannot be read now, the worker learns them later (baseline).
func (r *Registry) newAccount(acct string) (a *account) {
	a = &account{name: acct, sessions: map[uint64]*Session{}, cache: map[string]mapping.Status{},
		pending: map[string]pendingChange{}}
	if !r.policy.Plain.TellsMailboxes() {
		// Nobody is told STATUS or LIST: there is nothing to learn.
		return a
	}
	// This runs on the client's command goroutine: a failure here must not
	// fail its SELECT.
	defer func() {
		if p := recover(); p != nil {
			r.log.Printf("panic while learning account %s: %v\n%s", acct, p, debug.Stack())
			a.user = nil
			a.cache, a.names = map[string]mapping.Status{}, nil
			a.baseline = true
		}
	}()
	if err := a.ensureUser(r); err != nil {
		r.log.Error("cannot open account for STATUS", err, "account", acct)
		a.baseline = true
		return a
	}
	a.syncNames(r, false)
	scope, err := a.scopeMailboxes(r, true)
	if err != nil {
		r.log.Error("cannot list mailboxes", err, "account", acct)
		a.baseline = true
		return a
	}
	a.learn(r, scope)
	return a
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

// shareNames makes s share the account's mailbox list again once what it
// has been told equals it (usually as soon as it has been handed the
// mailbox events): a copy per session only while they differ.
func (r *Registry) shareNames(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[s.account]
	if a == nil || a.sessions[s.id] != s || a.names == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.namesOwn && sameNames(s.names, a.names) {
		s.names, s.namesGen, s.namesOwn = a.names, a.namesGen, false
		a.namesShared = true
	}
}

// sameNames reports whether two mailbox sets hold the same mailboxes. Only
// what a session's set is used for counts (relistSessions): the keys, and
// the name and delimiter of a LIST line for a deleted mailbox.
func sameNames(x, y map[string]imap.MailboxInfo) bool {
	if len(x) != len(y) {
		return false
	}
	for key, a := range x {
		b, ok := y[key]
		if !ok || a.Name != b.Name || a.Delimiter != b.Delimiter {
			return false
		}
	}
	return true
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
		clear(a.cache)
		clear(a.asked)
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
	it := item{ev: ev, kind: itemEvent, at: ev.Time, delimiter: ev.Delimiter}
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

// tellsLocked reports whether any session of the account may be told
// STATUS or LIST: under plain_clients draft every plain session may, and
// a NOTIFY session that asked for anything.
func (a *account) tellsLocked(r *Registry) bool {
	if r.policy.Plain.TellsMailboxes() {
		return true
	}
	for _, s := range a.sessions {
		s.mu.Lock()
		in := s.notify
		s.mu.Unlock()
		if in != nil && !in.Empty() {
			return true
		}
	}
	return false
}

// SetNotify records what the client of s asked for with NOTIFY SET (in;
// NOTIFY NONE is the zero Interest): from then on s is told what in asks
// for, as soon as it can be written to (RFC 5465). What was queued for it
// before is dropped. initial are the STATUS values that NOTIFY SET STATUS
// asks for: they are written now, in order, from the caller's goroutine
// (the NOTIFY command's, before its tagged OK), and recorded as told. It
// reports an error when the client is gone.
func (r *Registry) SetNotify(s *Session, in mapping.Interest, initial []InitialStatus) error {
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

// InitialStatus is one STATUS value that NOTIFY SET STATUS tells.
type InitialStatus struct {
	Mailbox string
	Status  mapping.Status
}

// HasAccount reports whether any session of acct is registered.
func (r *Registry) HasAccount(acct string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accounts[acct] != nil
}

// account is the shared state of one storage account's sessions. All fields
// are guarded by Registry.mu, except user, which only the running worker
// touches.
type account struct {
	name     string
	sessions map[uint64]*Session

	// cache is the last STATUS known per mailbox key (mapping's
	// case-insensitive INBOX), shared by the sessions.
	cache map[string]mapping.Status
	// pending holds, per mailbox key, the changes no query has been run
	// for yet.
	pending map[string]pendingChange
	// asked is, per mailbox key, the last query whose value went into
	// cache (query); changes that query already saw are not queried again
	// (seenLocked).
	asked map[string]askedQuery
	// sessionGen counts the sessions registered: one registered after a
	// query was not handed its value.
	sessionGen uint64
	// since is the time of the earliest pending change (push latency).
	since     time.Time
	reconcile bool
	baseline  bool
	// relist asks the worker to compare the mailbox list with names and
	// tell the sessions what was created or deleted meanwhile.
	relist bool
	// names is the account's mailbox list as last known (by key), from the
	// baseline and the mailbox events since; namesGen counts its
	// versions. While namesShared is set, sessions share the map
	// (Session.names): a change makes a new version from a copy.
	names       map[string]imap.MailboxInfo
	namesGen    uint64
	namesShared bool
	// resync lists sessions that lost queued items and need every STATUS.
	resync  []resyncReq
	running bool
	// wake tells the running worker that work came (scheduleLocked); nil
	// until it first waits for some (awaitDoubt).
	wake chan struct{}

	user backend.User
}

// mayBeUnchanged reports whether an event of kind k can leave every STATUS
// item of its mailbox as it was.
func mayBeUnchanged(k event.Kind) bool {
	return k == event.FlagChange || k == event.MessageExpunge
}

// pendingChange is what the account knows of the changes of one mailbox
// that no query has been run for yet.
type pendingChange struct {
	// origin is the session that made the changes; 0 when several
	// sessions or an outside source made them.
	origin uint64
	// unsure: the changes may all have left every STATUS item as it was
	// (flag changes, EXPUNGE or CLOSE with nothing to remove). The value
	// is then compared with the account's last known one, like a
	// reconciliation, instead of being handed to every session.
	unsure bool
	// done is no earlier than the store's commit of the newest change
	// (changeDone).
	done time.Time
}

// askedQuery is one STATUS query of a mailbox whose value the account took.
type askedQuery struct {
	start time.Time // before the store was asked
	end   time.Time // after it answered
	// handed: the value went to every session registered then
	// (sessionGen), with origin as the changes' origin.
	handed     bool
	origin     uint64
	sessionGen uint64
	handoff    *handoff // nil when not handed
}

func (a *account) addPendingLocked(mbox string, origin uint64, at time.Time, unsure bool) {
	if a.since.IsZero() || (!at.IsZero() && at.Before(a.since)) {
		a.since = at
	}
	done := changeDone(at)
	key := mapping.MailboxKey(mbox)
	p, ok := a.pending[key]
	if ok && p.origin != origin {
		origin = 0
	}
	p.origin = origin
	p.unsure = unsure && (!ok || p.unsure)
	if done.After(p.done) {
		p.done = done
	}
	a.pending[key] = p
}

// changeDone returns a time no earlier than the store's commit of a change
// whose event says it completed at t (Publish). A time read from this
// process's clock (it carries a monotonic reading; the hooks stamp events
// after the store call returned) is used as it is. An event from another
// instance carries another machine's clock, decoded from the broker's
// message, and an event may carry none: such a change was committed before
// it was published, so now will do.
func changeDone(t time.Time) time.Time {
	if t != t.Round(0) { // Round(0) strips the monotonic reading, if any
		return t
	}
	return time.Now()
}

// seenLocked reports whether the last query of key (asked) already saw
// every pending change of it, so that querying again could only repeat its
// value: each change was committed before that query started. A value that
// can go to every session (not unsure) must also have been handed on as
// this query's would be: to every session registered now, and to none as
// its own change that this one would tell it about.
func (a *account) seenLocked(key string, p pendingChange) bool {
	q, ok := a.asked[key]
	if !ok || p.done.IsZero() || !p.done.Before(q.start) {
		return false
	}
	if p.unsure {
		// Compared with cache, which holds that query's value.
		return true
	}
	return q.handed && q.sessionGen == a.sessionGen && (q.origin == 0 || q.origin == p.origin)
}

// doubtLocked reports whether the last query of key may have seen the
// pending changes of it without seenLocked being sure: the newest of them
// completed while that query ran.
func (a *account) doubtLocked(key string, p pendingChange) bool {
	q, ok := a.asked[key]
	return ok && !p.done.IsZero() && !p.done.Before(q.start) && !p.done.After(q.end)
}

// applyMailboxEventLocked keeps the STATUS cache in step with the mailbox
// hierarchy.
func (a *account) applyMailboxEventLocked(r *Registry, ev event.Event) {
	if a.names != nil {
		if a.namesShared {
			a.names, a.namesShared = cloneNames(a.names), false
		}
		applyNameEvent(a.names, ev, true)
		a.namesGen++
	}
	switch ev.Kind {
	case event.MailboxDelete:
		delete(a.cache, mapping.MailboxKey(ev.Mailbox))
		delete(a.asked, mapping.MailboxKey(ev.Mailbox))
	case event.MailboxRename:
		// What was asked under the old names is no guide any more.
		clear(a.asked)
		old, nw := mapping.MailboxKey(ev.OldMailbox), mapping.MailboxKey(ev.Mailbox)
		if old == "INBOX" {
			// RENAME INBOX moves the messages and leaves INBOX empty.
			a.cache[nw] = a.cache[old]
			a.addPendingLocked(old, 0, ev.Time, false)
			return
		}
		moved := func(key string) bool {
			return key == old || (ev.Delimiter != "" && strings.HasPrefix(key, old+ev.Delimiter))
		}
		for key, st := range a.cache {
			if moved(key) {
				delete(a.cache, key)
				a.cache[nw+key[len(old):]] = st
			}
		}
		// Changes not queried yet belong to the new name now. A query of
		// the old name may be running: it finds nothing, so the new name
		// is queried again and compared with what the account knows.
		for key, p := range a.pending {
			if moved(key) {
				delete(a.pending, key)
				a.pending[nw+key[len(old):]] = p
			}
		}
		// A client told of the rename by OLDNAME (NOTIFY) keeps what it
		// knew of the mailbox: the new name's value is told only if it
		// differs from the account's. One told of a deletion and a
		// creation (mapping.PlainDraft) learns the new name's state from
		// the value, handed to every session (each tells its client only
		// what differs from what it was told) but the renaming one: its
		// client made the change and is not told of it.
		a.addPendingLocked(ev.Mailbox, ev.Origin, ev.Time, r.policy.Plain != mapping.PlainDraft)
	}
}

// scheduleLocked starts the account's worker unless it runs already.
func (a *account) scheduleLocked(r *Registry) {
	if a.running {
		if a.wake != nil {
			select {
			case a.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	// Refused only once Close has begun; then nothing is owed any more.
	a.running = r.goSafe("account", a.name, func() { a.work(r) })
}

// statusJob is one STATUS query the worker owes and to whom.
type statusJob struct {
	mailbox string
	origin  uint64
	changed bool
	// changed: an event says the mailbox changed, so every session is
	// handed the fresh value (each tells its client only what differs from
	// what it was last told). Reconciliation jobs are handed on only when
	// the value differs from the account's last known one.
}

// work runs the account's STATUS queries until nothing is pending. One
// query per mailbox and pass: changes that arrive while it queries are
// picked up by the next pass, so the last STATUS a session gets is the
// state after the burst. A query is not repeated for changes the last one
// saw (seenLocked), and a pass first waits, briefly, for the sessions to
// take the last values (awaitTaken) and for a change the last query cannot
// have seen (awaitDoubt): in a burst every query then tells every idling
// session something.
func (a *account) work(r *Registry) {
	var owed []resyncReq // taken resync requests, answered whatever happens
	finished := false
	defer func() {
		for _, rq := range owed {
			close(rq.done)
		}
		if finished {
			return
		}
		// Stop, an error or a panic: this worker still owns running.
		r.mu.Lock()
		drop := a.stopLocked(r)
		r.mu.Unlock()
		if drop {
			a.logout(r)
		}
	}()
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		a.awaitTaken(r)
		a.awaitDoubt(r)
		r.mu.Lock()
		jobs, baseline, reconcile, relist, resync := a.takeLocked()
		if jobs == nil && !baseline && !reconcile && !relist && resync == nil {
			// Deciding to stop and clearing running happen under one
			// hold of mu: a Publish after it starts a new worker, whose
			// running flag this one must not touch.
			drop := a.stopLocked(r)
			finished = true
			r.mu.Unlock()
			if drop {
				a.logout(r)
			}
			return
		}
		r.mu.Unlock()
		owed = resync

		if err := a.ensureUser(r); err != nil {
			r.log.Error("cannot open account for STATUS", err, "account", a.name)
			return
		}
		since := a.takeSince(r)
		if baseline || relist {
			a.syncNames(r, relist)
		}
		var scope []string
		if baseline || reconcile || resync != nil {
			var err error
			if scope, err = a.scopeMailboxes(r, baseline || relist); err != nil {
				r.log.Error("cannot list mailboxes", err, "account", a.name)
			}
		}
		if baseline && !reconcile && resync == nil {
			// The baseline only learns; a reconciliation tells.
			a.learn(r, scope)
		} else {
			for _, mbox := range scope {
				jobs = append(jobs, statusJob{mailbox: mbox})
			}
		}
		a.relistSessions(r, sessionsOf(resync))
		a.query(r, a.inScope(r, jobs), sessionsOf(resync), since)
		for _, rq := range owed {
			close(rq.done)
		}
		owed = nil
	}
}

// awaitTaken waits, up to Registry.takeWait, until the sessions whose
// writers were about to take the last values of the pending mailboxes have
// taken them (handoff). Meanwhile more changes may come, which the next
// query then covers too.
func (a *account) awaitTaken(r *Registry) {
	var wait []*handoff
	r.mu.Lock()
	for key := range a.pending {
		h := a.asked[key].handoff
		if h == nil {
			continue
		}
		select {
		case <-h.done:
		default:
			wait = append(wait, h)
		}
	}
	r.mu.Unlock()
	if len(wait) == 0 {
		return
	}
	timer := time.NewTimer(r.takeWait)
	defer timer.Stop()
	for _, h := range wait {
		select {
		case <-h.done:
		case <-timer.C:
			return
		case <-r.stop:
			return
		}
	}
}

// awaitDoubt holds back, up to Registry.doubtWait, a pass whose only work
// is changes that the last query of their mailbox may already have seen:
// each was published while that query ran (doubtLocked). If it saw them,
// querying now would only repeat its value; the next change of the
// mailbox, which it cannot have seen, is queried with them instead. With
// no such change the wait ends at the bound and they are queried.
func (a *account) awaitDoubt(r *Registry) {
	r.mu.Lock()
	if a.wake == nil {
		a.wake = make(chan struct{}, 1)
	}
	select {
	case <-a.wake: // a change that is pending now
	default:
	}
	doubt := !a.baseline && !a.reconcile && !a.relist && len(a.resync) == 0
	some := false
	for key, p := range a.pending {
		switch {
		case a.seenLocked(key, p):
		case a.doubtLocked(key, p):
			some = true
		default:
			doubt = false
		}
	}
	r.mu.Unlock()
	if !doubt || !some {
		return
	}
	timer := time.NewTimer(r.doubtWait)
	defer timer.Stop()
	select {
	case <-a.wake:
	case <-timer.C:
	case <-r.stop:
	}
}

// relistSessions tells sessions that lost queued items (an overflow)
// which mailboxes were created or deleted since they were last told: the
// difference between the mailbox set each session has been told and the
// account's. A RENAME they missed comes as the old name's deletion and
// the new name's creation.
func (a *account) relistSessions(r *Registry, sessions []*Session) {
	if len(sessions) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if a.names == nil {
		return
	}
	now := time.Now()
	for _, s := range sessions {
		s.mu.Lock()
		known := s.names
		s.mu.Unlock()
		if known == nil {
			continue
		}
		var evs []event.Event
		for key, info := range a.names {
			if _, ok := known[key]; !ok {
				evs = append(evs, event.Event{Kind: event.MailboxCreate, Account: a.name, Mailbox: info.Name,
					Delimiter: info.Delimiter, Attrs: mapping.WithoutSubscribed(info.Attributes)})
			}
		}
		for key, info := range known {
			if _, ok := a.names[key]; !ok {
				evs = append(evs, event.Event{Kind: event.MailboxDelete, Account: a.name, Mailbox: info.Name, Delimiter: info.Delimiter})
			}
		}
		for _, ev := range evs {
			if r.policy.Events.Has(ev.Kind) {
				s.enqueue(item{ev: ev, kind: itemEvent, at: now, resync: true})
			} else {
				s.applyName(item{ev: ev, kind: itemEvent})
			}
		}
	}
}

func cloneNames(m map[string]imap.MailboxInfo) map[string]imap.MailboxInfo {
	if m == nil {
		return nil
	}
	out := make(map[string]imap.MailboxInfo, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// stopLocked records that the worker stopped and removes the account when
// it has no sessions left; it reports whether the caller must log out its
// store handle (after unlocking).
func (a *account) stopLocked(r *Registry) (drop bool) {
	a.running = false
	if len(a.sessions) == 0 && r.accounts[a.name] == a {
		delete(r.accounts, a.name)
		return true
	}
	return false
}

// resyncReq is a session's request for every STATUS in scope; done is
// closed once the worker has queued them (or gave up).
type resyncReq struct {
	s    *Session
	done chan struct{}
}

func sessionsOf(reqs []resyncReq) []*Session {
	var out []*Session
	for _, rq := range reqs {
		out = append(out, rq.s)
	}
	return out
}

func (a *account) takeSince(r *Registry) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := a.since
	a.since = time.Time{}
	return t
}

func (a *account) takeLocked() (jobs []statusJob, baseline, reconcile, relist bool, resync []resyncReq) {
	for key, p := range a.pending {
		if a.seenLocked(key, p) {
			continue
		}
		jobs = append(jobs, statusJob{mailbox: key, origin: p.origin, changed: !p.unsure})
	}
	clear(a.pending)
	baseline, reconcile, relist, resync = a.baseline, a.reconcile, a.relist, a.resync
	a.baseline, a.reconcile, a.relist, a.resync = false, false, false, nil
	return jobs, baseline, reconcile, relist, resync
}

func (a *account) ensureUser(r *Registry) error {
	if a.user != nil {
		return nil
	}
	u, err := r.open(a.name)
	if err != nil {
		return err
	}
	a.user = u
	return nil
}

func (a *account) logout(r *Registry) {
	if a.user == nil {
		return
	}
	if err := a.user.Logout(); err != nil {
		r.log.Error("logout failed", err, "account", a.name)
	}
	a.user = nil
}

// ListMailboxes lists every mailbox of user (ListMailboxes(false)) with
// \Subscribed among the attributes of each one the user has subscribed,
// as the set of mailbox names and NOTIFY's subscribed filter read them:
// the store's full list does not say which mailboxes are subscribed
// (go-imap-sql lists subscriptions only with ListMailboxes(true)).
func ListMailboxes(user backend.User) ([]imap.MailboxInfo, error) {
	infos, err := user.ListMailboxes(false)
	if err != nil {
		return nil, err
	}
	subs, err := user.ListMailboxes(true)
	if err != nil {
		return nil, err
	}
	subscribed := make(map[string]bool, len(subs))
	for _, info := range subs {
		subscribed[mapping.MailboxKey(info.Name)] = true
	}
	for i, info := range infos {
		infos[i].Attributes = mapping.SubscriptionAttrs(info.Attributes, subscribed[mapping.MailboxKey(info.Name)])
	}
	return infos, nil
}

// syncNames reads the account's mailbox list. With tell set it tells the
// sessions what was created or deleted since the list was last known, as
// LIST lines from no session (origin 0).
func (a *account) syncNames(r *Registry, tell bool) {
	var now map[string]imap.MailboxInfo
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		gen := a.namesGen
		r.mu.Unlock()
		infos, err := ListMailboxes(a.user)
		if err != nil {
			r.log.Error("cannot list mailboxes", err, "account", a.name)
			return
		}
		now = make(map[string]imap.MailboxInfo, len(infos))
		for _, info := range infos {
			now[mapping.MailboxKey(info.Name)] = info
		}
		r.mu.Lock()
		// A mailbox event applied while the store was read may be newer
		// than the list read: comparing them would tell the client its
		// new mailbox is gone. Read again (a few times; a burst of
		// changes ends).
		if a.namesGen == gen || attempt == 3 {
			break
		}
		r.mu.Unlock()
	}
	before := a.names
	a.names, a.namesShared = now, false
	a.namesGen++
	var evs []event.Event
	if tell && before != nil {
		for key, info := range now {
			if _, ok := before[key]; !ok {
				evs = append(evs, event.Event{Kind: event.MailboxCreate, Account: a.name, Mailbox: info.Name,
					Delimiter: info.Delimiter, Attrs: mapping.WithoutSubscribed(info.Attributes)})
			}
		}
		for key, info := range before {
			if _, ok := now[key]; !ok {
				evs = append(evs, event.Event{Kind: event.MailboxDelete, Account: a.name, Mailbox: info.Name, Delimiter: info.Delimiter})
			}
		}
	}
	for _, ev := range evs {
		if !r.policy.Events.Has(ev.Kind) {
			continue
		}
		if ev.Kind == event.MailboxDelete {
			delete(a.cache, mapping.MailboxKey(ev.Mailbox))
			delete(a.asked, mapping.MailboxKey(ev.Mailbox))
		}
		for _, s := range a.sessions {
			s.enqueue(item{ev: ev, kind: itemEvent, at: time.Now()})
		}
	}
	r.mu.Unlock()
}

// scopeMailboxes lists the mailboxes whose STATUS the policy sends.
//
// fresh says the account's mailbox list was read from the store just now
// (syncNames), so that it can stand in for another listing.
func (a *account) scopeMailboxes(r *Registry, fresh bool) ([]string, error) {
	switch r.policy.StatusMailboxes {
	case mapping.NoMailboxes:
		return nil, nil
	case mapping.Inboxes:
		return []string{"INBOX"}, nil
	}
	subscribedOnly := r.policy.StatusMailboxes == mapping.SubscribedMailboxes
	// The account's list, just read, says as much as the store would
	// (ListMailboxes marks \Subscribed): the store lists every mailbox
	// with a query per mailbox (go-imap-sql), which an account of 10,000
	// mailboxes feels.
	r.mu.Lock()
	var infos []imap.MailboxInfo
	known := fresh && a.names != nil
	for _, info := range a.names {
		if known && (!subscribedOnly || mapping.IsSubscribed(info.Attributes)) {
			infos = append(infos, info)
		}
	}
	r.mu.Unlock()
	if !known {
		var err error
		if infos, err = a.user.ListMailboxes(subscribedOnly); err != nil {
			return nil, fmt.Errorf("list mailboxes: %w", err)
		}
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	names := make([]string, 0, len(infos))
	for _, info := range infos {
		if mapping.HasAttr(info.Attributes, imap.NoSelectAttr) {
			continue
		}
		names = append(names, info.Name)
	}
	return names, nil
}

// inScope drops the jobs for mailboxes whose STATUS the policy does not
// send (message events name any mailbox).
func (a *account) inScope(r *Registry, jobs []statusJob) []statusJob {
	var keep func(string) bool
	switch r.policy.StatusMailboxes {
	case mapping.AllMailboxes:
		return jobs
	case mapping.NoMailboxes:
		return nil
	case mapping.Inboxes:
		keep = mapping.IsInbox
	case mapping.SubscribedMailboxes:
		subs, err := a.user.ListMailboxes(true)
		if err != nil {
			r.log.Error("cannot list subscribed mailboxes", err, "account", a.name)
			return nil
		}
		set := map[string]bool{}
		for _, info := range subs {
			set[mapping.MailboxKey(info.Name)] = true
		}
		keep = func(name string) bool { return set[mapping.MailboxKey(name)] }
	}
	out := jobs[:0]
	for _, j := range jobs {
		if keep(j.mailbox) {
			out = append(out, j)
		}
	}
	return out
}

func (a *account) status(r *Registry, mbox string) (mapping.Status, error) {
	r.metrics.StatusQuery()
	st, err := a.user.Status(mbox, r.policy.StatusItems.Request())
	if err != nil {
		return mapping.Status{}, err
	}
	return mapping.StatusOf(st), nil
}

// learn records the current state without telling anyone.
func (a *account) learn(r *Registry, mailboxes []string) {
	batch := a.batchStatuses(r, len(mailboxes))
	for _, mbox := range mailboxes {
		st, ok := batch[mapping.MailboxKey(mbox)]
		if !ok {
			var err error
			if st, err = a.status(r, mbox); err != nil {
				continue // the mailbox may be gone already; nothing to learn
			}
		}
		r.mu.Lock()
		if _, known := a.cache[mapping.MailboxKey(mbox)]; !known {
			a.cache[mapping.MailboxKey(mbox)] = st
		}
		r.mu.Unlock()
	}
}

// query runs the jobs (each mailbox once) and hands changed values to the
// sessions; sessions in resync get every value.
func (a *account) query(r *Registry, jobs []statusJob, resync []*Session, since time.Time) {
	// One query per mailbox: an event job wins over a reconciliation job
	// for the same mailbox.
	byKey := map[string]int{}
	var uniq []statusJob
	for _, j := range jobs {
		key := mapping.MailboxKey(j.mailbox)
		if i, ok := byKey[key]; ok {
			if j.changed && !uniq[i].changed {
				uniq[i] = j
			}
			continue
		}
		byKey[key] = len(uniq)
		uniq = append(uniq, j)
	}
	batchStart := time.Now()
	// Which mailboxes the account's list holds before their values are
	// read: one that leaves it meanwhile was deleted or renamed away.
	listed := make(map[string]bool, len(uniq))
	r.mu.Lock()
	for _, j := range uniq {
		key := mapping.MailboxKey(j.mailbox)
		_, listed[key] = a.names[key]
	}
	r.mu.Unlock()
	batch := a.batchStatuses(r, len(uniq))
	batchEnd := time.Now()
	for _, j := range uniq {
		key := mapping.MailboxKey(j.mailbox)
		if len(resync) == 0 && a.skipSelectedByAll(r, key) {
			continue
		}
		start, end := batchStart, batchEnd
		st, ok := batch[key]
		var err error
		if !ok {
			start = time.Now()
			st, err = a.status(r, j.mailbox)
			end = time.Now()
		}
		if err != nil {
			if !errors.Is(err, backend.ErrNoSuchMailbox) {
				r.log.Error("STATUS query failed; sessions keep their last values", err,
					"account", a.name, "mailbox", j.mailbox)
			}
			continue
		}
		r.mu.Lock()
		if _, exists := a.names[key]; listed[key] && !exists {
			// Deleted (or renamed away) while it was read: its sessions
			// were or are being told so, and a STATUS of it after that
			// would contradict the LIST. The value is queued, below,
			// under the same hold of mu as this check, so that it can
			// only come before such a LIST, never after. (A mailbox the
			// list did not hold before either is not judged by it: the
			// store has just read it.)
			r.mu.Unlock()
			continue
		}
		old, known := a.cache[key]
		a.cache[key] = st
		changed := j.changed || !known || old != st
		if !j.changed && !known && st.Messages == 0 {
			// A mailbox the account learns of by reconciliation (created
			// since) and still empty: nothing happened in it to tell.
			changed = false
		}
		var targets []*Session
		if changed {
			for _, s := range a.sessions {
				targets = append(targets, s)
			}
		} else {
			targets = append(targets, resync...)
		}
		var h *handoff
		if changed && len(targets) > 0 {
			h = newHandoff()
		}
		subscribed, delimiter := subscribedIn(a.names, key)
		if a.asked == nil {
			a.asked = map[string]askedQuery{}
		}
		a.asked[key] = askedQuery{start: start, end: end, handed: changed, origin: j.origin,
			sessionGen: a.sessionGen, handoff: h}
		prompt := 0
		for _, s := range targets {
			if s.enqueue(item{kind: itemStatus, mailbox: j.mailbox, status: st, origin: j.origin, at: since,
				resync: slices.Contains(resync, s), handoff: h, subscribed: subscribed, delimiter: delimiter}) {
				prompt++
			}
		}
		r.mu.Unlock()
		if h != nil {
			h.counted(prompt)
		}
	}
}

// skipSelectedByAll reports whether the STATUS query of the mailbox key
// can be left out because every session of the account has that mailbox
// selected: none of them is ever told its STATUS (the store's EXISTS,
// EXPUNGE and FETCH tell them), the common case of one device idling on
// INBOX while mail arrives. The account's value of the mailbox becomes
// unknown, so that the next query of it hands its value to every session
// (each tells its client only what differs from what it was told).
func (a *account) skipSelectedByAll(r *Registry, key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(a.sessions) == 0 {
		return false
	}
	for _, s := range a.sessions {
		s.mu.Lock()
		sel := s.selected
		s.mu.Unlock()
		if sel == "" || mapping.MailboxKey(sel) != key {
			return false
		}
	}
	delete(a.cache, key)
	delete(a.asked, key)
	return true
}

// hierarchyLock serialises one account's mailbox hierarchy changes.
type hierarchyLock struct {
	mu    sync.Mutex
	users int
}

// LockHierarchy serialises the mailbox hierarchy changes of acct made
// through this module instance (CREATE, DELETE, RENAME, SUBSCRIBE): the
// caller lists the mailboxes, changes them, lists them again and publishes
// the difference before it calls the returned unlock, so that the events
// of changes made by different sessions at the same time are published in
// the order the store made them. It may be called from any goroutine.
func (r *Registry) LockHierarchy(acct string) (unlock func()) {
	r.hierMu.Lock()
	if r.hier == nil {
		r.hier = map[string]*hierarchyLock{}
	}
	l := r.hier[acct]
	if l == nil {
		l = &hierarchyLock{}
		r.hier[acct] = l
	}
	l.users++
	r.hierMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.hierMu.Lock()
		if l.users--; l.users == 0 {
			delete(r.hier, acct)
		}
		r.hierMu.Unlock()
	}
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
