// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// This file holds the account's worker: the goroutine that queries the
// STATUS of changed mailboxes, one pass at a time, and makes each new value
// a version of the account's state (setLocked).

// takeGate counts the sessions that were about to take the values of one
// pass of the account's worker: those whose writer was running or starting
// and not in the middle of a write when their mailboxes were marked. The
// worker's next pass waits until each has taken them (or can no longer:
// it left IDLE, the registry, or its writer ended), so that every value
// reaches the sessions that keep up before the next one replaces it. A
// session in the middle of a write (its client may have stopped reading)
// is not counted, and none is waited for with a timer.
type takeGate struct {
	mu     sync.Mutex
	n      int
	sealed bool
	done   chan struct{}
}

func newTakeGate() *takeGate { return &takeGate{done: make(chan struct{})} }

func (g *takeGate) add() {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
}

// release counts one session done with the gate's values.
func (g *takeGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	g.closeLocked()
}

// seal says that every session has been counted.
func (g *takeGate) seal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sealed = true
	g.closeLocked()
}

func (g *takeGate) closeLocked() {
	if g.sealed && g.n <= 0 {
		select {
		case <-g.done:
		default:
			close(g.done)
		}
	}
}

// scheduleLocked starts the account's worker unless it runs already.
func (a *account) scheduleLocked(r *Registry) {
	if a.running {
		return
	}
	// Refused only once Close has begun; then nothing is owed any more.
	a.running = r.goSafe("account", a.name, func() { a.work(r) })
}

// statusJob is one STATUS query the worker owes.
type statusJob struct {
	mailbox string
	origin  uint64
	// changed: an event says the mailbox changed, so its value is a new
	// version for every session (each tells its client only what differs
	// from what it was last told). The value of a reconciliation or of an
	// unsure change is a new version only when it differs from the
	// account's.
	changed bool
}

// work runs the account's STATUS queries until nothing is pending. One
// query per mailbox and pass: changes that arrive while it queries are
// picked up by the next pass, so the last value of a burst is the state
// after it. A pass first waits until the sessions that were about to take
// the last pass's values have taken them (awaitGate); a query is not
// repeated for changes the last one saw (seenLocked).
func (a *account) work(r *Registry) {
	finished := false
	defer func() {
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
		if !a.awaitGate(r) || !a.awaitFlights(r) {
			return
		}
		r.mu.Lock()
		jobs, baseline, reconcile, relist := a.takeLocked()
		if jobs == nil && !baseline && !reconcile && !relist {
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

		if err := a.ensureUser(r); err != nil {
			r.log.Error("cannot open account for STATUS", err, "account", a.name)
			return
		}
		since := a.takeSince(r)
		if baseline || relist {
			a.syncNames(r, relist)
		}
		var scope []string
		if baseline || reconcile {
			var err error
			if scope, err = a.scopeMailboxes(r, baseline || relist); err != nil {
				r.log.Error("cannot list mailboxes", err, "account", a.name)
			}
		}
		if baseline && !reconcile {
			// The baseline only learns; a reconciliation tells.
			a.learn(r, scope)
		} else {
			for _, mbox := range scope {
				jobs = append(jobs, statusJob{mailbox: mbox})
			}
		}
		a.query(r, a.inScope(r, jobs), since)
	}
}

// awaitGate waits until the sessions counted in the last pass's gate have
// taken its values. It reports false when the registry is closing.
func (a *account) awaitGate(r *Registry) bool {
	r.mu.Lock()
	g := a.gate
	a.gate = nil
	r.mu.Unlock()
	if g == nil {
		return true
	}
	select {
	case <-g.done:
		return true
	case <-r.stop:
		return false
	}
}

// awaitFlights waits until the changes under way now (BeginChange) in the
// mailboxes with pending changes have ended, so that the pass that follows
// takes their events and reads their values. Changes that begin later are
// not waited for: a mailbox written to without pause is still queried. It
// reports false when the registry is closing.
func (a *account) awaitFlights(r *Registry) bool {
	r.mu.Lock()
	var wait []chan struct{}
	for f := range a.flights {
		if _, ok := a.pending[f.key]; ok {
			wait = append(wait, f.done)
		}
	}
	r.mu.Unlock()
	for _, ch := range wait {
		select {
		case <-ch:
		case <-r.stop:
			return false
		}
	}
	return true
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

func (a *account) takeSince(r *Registry) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := a.since
	a.since = time.Time{}
	return t
}

func (a *account) takeLocked() (jobs []statusJob, baseline, reconcile, relist bool) {
	for key, p := range a.pending {
		if a.seenLocked(key, p) {
			continue
		}
		mbox := key
		if e := a.status[key]; e != nil {
			mbox = e.mailbox
		}
		jobs = append(jobs, statusJob{mailbox: mbox, origin: p.origin, changed: !p.unsure})
	}
	clear(a.pending)
	baseline, reconcile, relist = a.baseline, a.reconcile, a.relist
	a.baseline, a.reconcile, a.relist = false, false, false
	return jobs, baseline, reconcile, relist
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

func (a *account) readStatus(r *Registry, mbox string) (mapping.Status, error) {
	r.metrics.StatusQuery()
	st, err := a.user.Status(mbox, r.policy.StatusItems.Request())
	if err != nil {
		return mapping.Status{}, err
	}
	return mapping.StatusOf(st), nil
}

// learn records the current state of mailboxes without telling anyone.
func (a *account) learn(r *Registry, mailboxes []string) {
	batch := a.batchStatuses(r, len(mailboxes))
	for _, mbox := range mailboxes {
		st, ok := batch[mapping.MailboxKey(mbox)]
		if !ok {
			var err error
			if st, err = a.readStatus(r, mbox); err != nil {
				continue // the mailbox may be gone already; nothing to learn
			}
		}
		r.mu.Lock()
		if _, known := a.status[mapping.MailboxKey(mbox)]; !known {
			a.status[mapping.MailboxKey(mbox)] = a.newEntryLocked(mbox, st)
		}
		r.mu.Unlock()
	}
}

// query runs the jobs (each mailbox once) and makes each value that is new
// to the account a new version, marked in the sessions (setLocked).
func (a *account) query(r *Registry, jobs []statusJob, since time.Time) {
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
	gate := newTakeGate()
	defer func() {
		gate.seal()
		r.mu.Lock()
		a.gate = gate
		r.mu.Unlock()
	}()
	for _, j := range uniq {
		key := mapping.MailboxKey(j.mailbox)
		if a.skipSelectedByAll(r, key) {
			continue
		}
		start := batchStart
		st, ok := batch[key]
		var err error
		if !ok {
			start = time.Now()
			st, err = a.readStatus(r, j.mailbox)
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
			// would contradict the LIST. The value is marked, below,
			// under the same hold of mu as this check, so that a session
			// takes it before such a LIST is queued, never after. (A
			// mailbox the list did not hold before either is not judged
			// by it: the store has just read it.)
			r.mu.Unlock()
			continue
		}
		marked := a.setLocked(key, j, st, since, gate)
		a.queried[key] = lastQuery{start: start, marked: marked, origin: j.origin, sessionGen: a.sessionGen}
		r.mu.Unlock()
	}
}

// setLocked records st as the newest value of mailbox key and, when it is
// a new version, marks it in every session that may be told it; it reports
// whether it did.
func (a *account) setLocked(key string, j statusJob, st mapping.Status, since time.Time, gate *takeGate) bool {
	e, known := a.status[key]
	if !known {
		e = a.newEntryLocked(j.mailbox, st)
		a.status[key] = e
	}
	old := e.value
	e.value = st
	switch {
	case j.changed:
	case !known && st.Messages == 0:
		// A mailbox the account learns of by reconciliation (created
		// since) and still empty: nothing happened in it to tell.
		return false
	case known && old == st:
		return false
	}
	a.version++
	if j.origin == 0 || j.origin != e.origin {
		e.origin, e.base = j.origin, e.version
	}
	e.version = a.version
	for _, s := range a.sessions {
		s.markStatus(key, since, gate)
	}
	return true
}

// skipSelectedByAll reports whether the STATUS query of the mailbox key
// can be left out because every session of the account has that mailbox
// selected: none of them is ever told its STATUS (the store's EXISTS,
// EXPUNGE and FETCH tell them), the common case of one device idling on
// INBOX while mail arrives. The account's value of the mailbox becomes
// unknown, so that the next query of it is a new version for every session
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
	a.forgetLocked(key)
	return true
}
