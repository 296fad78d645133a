// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"runtime/debug"
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
	lastID  uint64 // the last statusEntry.id given
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
	// flights are the changes of the account's mailboxes under way through
	// this instance's hooks (Registry.BeginChange): the worker lets those
	// of the mailboxes it is about to query end first (awaitFlights).
	flights map[*flight]struct{}
	// gate counts the sessions that were about to take the values of the
	// worker's last pass; the next pass waits for them (awaitGate).
	gate *takeGate

	user backend.User
}

// statusEntry is the account's newest STATUS value of one mailbox.
type statusEntry struct {
	// id names the mailbox's state for as long as the account knows it,
	// across renames (Session.taken).
	id      uint64
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

// newEntryLocked returns a new state of mailbox, holding value, learnt
// without telling anyone (version 0).
func (a *account) newEntryLocked(mailbox string, value mapping.Status) *statusEntry {
	a.lastID++
	return &statusEntry{id: a.lastID, mailbox: mailbox, value: value}
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
				a.status[nw] = a.newEntryLocked(ev.Mailbox, e.value)
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
		pending: map[string]pendingChange{}, queried: map[string]lastQuery{}, flights: map[*flight]struct{}{}}
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

// flight is one change of a mailbox under way (Registry.BeginChange).
type flight struct {
	key  string
	done chan struct{}
}

// BeginChange records that the caller (the hooks, on a session's command
// goroutine) is about to change the messages of mailbox of acct through the
// store; the returned end must be called once the store call returned and
// the change's event, if any, was published. While a change is under way,
// the account's worker does not query the STATUS of its mailbox (it waits
// for the change to end, awaitFlights): a query that ran meanwhile might
// or might not see the change, and a change it saw but whose event came
// after it started would be queried again for a value no session is told.
// It may be called from any goroutine; end may be called more than once.
func (r *Registry) BeginChange(acct, mailbox string) (end func()) {
	r.mu.Lock()
	a := r.accounts[acct]
	if a == nil || r.closed || a.names == nil {
		// No session, or the account's state is not kept (nobody is told
		// STATUS, as under plain_clients selected): nothing waits.
		r.mu.Unlock()
		return func() {}
	}
	f := &flight{key: mapping.MailboxKey(mailbox), done: make(chan struct{})}
	a.flights[f] = struct{}{}
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			delete(a.flights, f)
			r.mu.Unlock()
			close(f.done)
		})
	}
}
