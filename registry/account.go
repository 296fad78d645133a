// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// account is the shared state of one storage account's sessions. All fields
// are guarded by Registry.mu, except user, which only the running worker
// (or the goroutine that learns a new account) touches.
//
// STATUS is a state, not a queue: status holds the newest value of each
// mailbox with a version; a new value marks the mailbox in every session
// that may be told it (Session.markStatus), and the session, when it is
// woken, compares the account's value with what its client was told
// (mapping.MapStatus). Only the mailbox events (LIST), whose order matters,
// are queued per session.
type account struct {
	name     string
	sessions map[uint64]*Session

	// status is the newest STATUS value per mailbox key (mapping's
	// case-insensitive INBOX); version numbers its values.
	status  map[string]*statusEntry
	version uint64
	// pending holds, per mailbox key, the changes no query has been run
	// for yet.
	pending map[string]pendingChange
	// queried is, per mailbox key, the last query whose value the account
	// took; a change it already saw is not queried again (seenLocked).
	queried map[string]lastQuery
	// sessionGen counts the sessions registered: one registered after a
	// query was not marked for its value.
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
	running     bool
	// gate counts the sessions that were about to take the values of the
	// worker's last pass; the next pass waits for them (awaitGate).
	gate *takeGate

	user backend.User
}

// statusEntry is the account's newest STATUS value of one mailbox.
type statusEntry struct {
	mailbox string // as the store spells it
	value   mapping.Status
	// version is the account's version of value; 0 for a value learnt
	// without telling anyone (the baseline).
	version uint64
	// origin made every version of the mailbox above base alone (a
	// session's id; 0 when several sessions or an outside source did).
	origin uint64
	base   uint64
}

// ownSince reports whether every version of e above taken was made by
// session id alone.
func (e *statusEntry) ownSince(id, taken uint64) bool {
	return id != 0 && e.origin == id && taken >= e.base
}

// lastQuery is the last STATUS query of a mailbox whose value the account
// took.
type lastQuery struct {
	start time.Time // before the store was asked
	// marked: the value went to every session registered then
	// (sessionGen) as a new version made by origin.
	marked     bool
	origin     uint64
	sessionGen uint64
}

// pendingChange is what the account knows of the changes of one mailbox
// that no query has been run for yet.
type pendingChange struct {
	// origin is the session that made the changes; 0 when several
	// sessions or an outside source made them.
	origin uint64
	// unsure: the changes may all have left every STATUS item as it was
	// (flag changes, EXPUNGE or CLOSE with nothing to remove). The value
	// is then compared with the account's, like a reconciliation, instead
	// of being a new version for every session.
	unsure bool
	// done is no earlier than the store's commit of the newest change
	// (changeDone).
	done time.Time
}

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

// mayBeUnchanged reports whether an event of kind k can leave every STATUS
// item of its mailbox as it was.
func mayBeUnchanged(k event.Kind) bool {
	return k == event.FlagChange || k == event.MessageExpunge
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

// seenLocked reports whether the last query of key already saw every
// pending change of it, so that querying again could only repeat its
// value: each change was committed before that query started. A change
// that makes a new version for every session (not unsure) must also have
// had that query's value marked as this one's would be: for every session
// registered now, and for none as its own change that this one would tell
// it about.
func (a *account) seenLocked(key string, p pendingChange) bool {
	q, ok := a.queried[key]
	if !ok || p.done.IsZero() || !p.done.Before(q.start) {
		return false
	}
	if p.unsure {
		// Compared with the account's value, which is that query's.
		return true
	}
	return q.marked && q.sessionGen == a.sessionGen && (q.origin == 0 || q.origin == p.origin)
}

// forgetLocked drops what the account knows of the STATUS of key.
func (a *account) forgetLocked(key string) {
	delete(a.status, key)
	delete(a.queried, key)
}

// applyMailboxEventLocked keeps the mailbox list and the STATUS state in
// step with the mailbox hierarchy.
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
		a.forgetLocked(mapping.MailboxKey(ev.Mailbox))
	case event.MailboxRename:
		// What was queried under the old names is no guide any more.
		clear(a.queried)
		old, nw := mapping.MailboxKey(ev.OldMailbox), mapping.MailboxKey(ev.Mailbox)
		if old == "INBOX" {
			// RENAME INBOX moves the messages and leaves INBOX empty.
			if e := a.status[old]; e != nil {
				moved := *e
				moved.mailbox = ev.Mailbox
				a.status[nw] = &moved
			}
			a.addPendingLocked(old, 0, ev.Time, false)
			return
		}
		moved := func(key string) bool {
			return key == old || (ev.Delimiter != "" && strings.HasPrefix(key, old+ev.Delimiter))
		}
		renamed := map[string]string{}
		for key := range a.status {
			if moved(key) {
				renamed[key] = nw + key[len(old):]
			}
		}
		for from, to := range renamed {
			e := a.status[from]
			delete(a.status, from)
			e.mailbox = ev.Mailbox + e.mailbox[len(ev.OldMailbox):]
			a.status[to] = e
		}
		// What the sessions have yet to take moves with the mailboxes.
		for _, s := range a.sessions {
			s.renameStatus(renamed)
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
		// a new version of it (each session tells its client only what
		// differs from what it was told) but the renaming one: its client
		// made the change and is not told of it.
		a.addPendingLocked(ev.Mailbox, ev.Origin, ev.Time, r.policy.Plain != mapping.PlainDraft)
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
		if !a.awaitGate(r) {
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
			a.status[mapping.MailboxKey(mbox)] = &statusEntry{mailbox: mbox, value: st}
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
		e = &statusEntry{mailbox: j.mailbox}
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

// statusFor returns the account's newest values of the mailboxes keys for
// s, with the facts the session's interest may need; a mailbox the account
// no longer knows (deleted, renamed away) has none.
func (r *Registry) statusFor(s *Session, keys []string) []takenStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[s.account]
	if a == nil || a.sessions[s.id] != s {
		return nil
	}
	out := make([]takenStatus, 0, len(keys))
	for _, key := range keys {
		e := a.status[key]
		if e == nil {
			continue
		}
		subscribed, delimiter := subscribedIn(a.names, key)
		out = append(out, takenStatus{key: key, entry: *e, subscribed: subscribed, delimiter: delimiter})
	}
	return out
}

// takenStatus is a session's copy of one mailbox's state (statusFor).
type takenStatus struct {
	key        string
	entry      statusEntry
	subscribed bool
	delimiter  string
}

// newAccount returns the state of an account that has no session yet, with
// its mailbox list and the STATUS of the mailboxes in scope learnt. If the
// store cannot be read now, the worker learns them later (baseline).
func (r *Registry) newAccount(acct string) (a *account) {
	a = &account{name: acct, sessions: map[uint64]*Session{}, status: map[string]*statusEntry{},
		pending: map[string]pendingChange{}, queried: map[string]lastQuery{}}
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
			a.status, a.names = map[string]*statusEntry{}, nil
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
