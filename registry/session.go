// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// keepaliveLine is what an idling client is written when it has been
// written nothing for the keepalive interval (Registry.StartKeepalive).
const keepaliveLine = "* OK Still here\r\n"

// overflowLine tells a NOTIFY client that notifications were lost: from
// then on it is told nothing until its next NOTIFY SET (RFC 5465 section
// 5.8).
const overflowLine = "* OK [NOTIFICATIONOVERFLOW] notifications were lost; send NOTIFY SET again\r\n"

// item is one mailbox event queued for a session.
type item struct {
	ev event.Event
	at time.Time // when the store changed (zero: unknown)
	// names is the account's mailbox set once ev was applied, version
	// namesGen (account.names); nil when unknown.
	names    map[string]imap.MailboxInfo
	namesGen uint64
	// subscribed says whether the event's mailbox was subscribed when it
	// was queued (for a deletion: before it), for NOTIFY's subscribed
	// filter.
	subscribed bool
}

// Session is one IMAP connection of an account that has a mailbox selected
// (or that sent NOTIFY).
//
// What it is due is a state, not a queue, except for the mailbox events:
// the keys of the mailboxes whose STATUS changed since it last took them
// (dirty), whether the store announced new messages (fetchDue), and a
// queue of mailbox events bounded by QueueLimit. When a slow or stuck
// client lets the queue overflow, the queue is dropped and the session is
// resynchronised by state at its next write (LIST lines for what was
// created or deleted since it was last told, and every STATUS the account
// holds compared with what its client was told); a NOTIFY client is told
// NOTIFICATIONOVERFLOW instead. A session has no goroutine of its own:
// while the client can be written to, marking it starts a writer
// goroutine, which ends once nothing is due; Flush writes from the
// caller's goroutine (NOOP/CHECK).
type Session struct {
	reg     *Registry
	id      uint64
	account string
	out     Out

	mu       sync.Mutex
	selected string
	fetcher  Fetcher
	idling   bool
	// writing: a writer goroutine runs (kickLocked); no second one starts.
	// flushing: a Flush has taken what is due and is writing it.
	writing  bool
	flushing bool
	// gone: the session left the registry (or the registry closed): it is
	// queued nothing more and no writer starts for it.
	gone     bool
	overflow bool
	queue    []item
	// dirty holds the keys of the mailboxes whose STATUS changed since
	// the session last took them; dirtyAt is when the earliest of those
	// changes happened (push latency). gate, when set, counts the session
	// in the account worker's last pass (takeGate).
	dirty   map[string]struct{}
	dirtyAt time.Time
	gate    *takeGate
	// fetchDue: the store announced new messages in the selected mailbox
	// (fetchDueAt: when) and their FETCH is due: in IDLE from the writer,
	// otherwise at the next Poll (the store's EXISTS goes out only there).
	// keepalive: a keepalive is due.
	fetchDue   bool
	fetchDueAt time.Time
	keepalive  bool
	// notify is what the client asked for with NOTIFY (nil: a plain
	// session, told what Policy.Plain says); lost says notifications for
	// it were lost, to be told with NOTIFICATIONOVERFLOW.
	notify *mapping.Interest
	lost   bool
	// fetchTries counts FetchNew calls that found an announced message not
	// yet readable; they are retried with backoff, up to maxFetchTries.
	fetchTries int
	// retryAt is when the store announced the messages a retry fetches
	// (push latency is measured from there, not from the retry).
	retryAt time.Time
	// retry makes the FETCH retry due when it fires; nil until the first
	// one.
	retry *time.Timer
	// names is the mailbox set (by key) the session has been told: the
	// account's at registration and every mailbox event it was handed
	// since; nil when unknown. An overflow resynchronises it
	// (Registry.resync). Unless namesOwn is set it is the account's map of
	// version namesGen, shared and never modified (applyName copies it
	// first).
	names    map[string]imap.MailboxInfo
	namesGen uint64
	namesOwn bool
	// commits counts the store's commits of new messages in the selected
	// mailbox (committed); a FETCH that found a message unreadable retries
	// at once if one came meanwhile.
	commits uint64
	// commitsFetched is commits when the last FETCH of new messages found
	// every announced message readable; awaitCommit: the FETCH of what the
	// store announced to the idling client waits for the commit (see
	// NewMessages), the retry timer armed with commitWait meanwhile.
	commitsFetched uint64
	awaitCommit    bool
	// baseVersion is the account's STATUS version when the session
	// registered.
	baseVersion uint64

	// lastWrite is when the client was last written something (UnixNano):
	// the store's lines, ours, or the start of IDLE.
	lastWrite atomic.Int64

	// flushMu serialises Flush between the writer goroutine and the
	// command goroutine; view and taken are only touched under it. view
	// is what the client was told of each mailbox's STATUS, nil until the
	// session is first handed a value; taken is, by statusEntry.id, the
	// account's version of each mailbox's value the session last took (an
	// entry stays after its mailbox is deleted: one per deleted mailbox).
	flushMu sync.Mutex
	view    *mapping.StatusView
	taken   map[uint64]uint64
}

// ID returns the session's opaque id (the Origin of its own events).
func (s *Session) ID() uint64 { return s.id }

// Select records the selected mailbox and the reader of its new messages.
// The view of the newly selected mailbox is dropped: SELECT told the client
// its state.
func (s *Session) Select(mailbox string, f Fetcher) {
	s.mu.Lock()
	s.selected, s.fetcher = mailbox, f
	s.mu.Unlock()
	s.flushMu.Lock()
	if s.view != nil {
		s.view.Forget(mailbox)
	}
	s.flushMu.Unlock()
}

// Selected returns the session's selected mailbox, "" when none.
func (s *Session) Selected() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.selected
}

// Unselect records that no mailbox is selected (or that the one given is
// closed).
func (s *Session) Unselect(mailbox string) {
	s.mu.Lock()
	if mapping.SameMailbox(s.selected, mailbox) {
		s.selected, s.fetcher = "", nil
	}
	s.mu.Unlock()
}

// SetIdle records whether the client is in IDLE; entering IDLE starts a
// writer for what is due.
func (s *Session) SetIdle(idling bool) {
	s.mu.Lock()
	was := s.idling
	s.idling = idling
	if idling {
		s.lastWrite.Store(time.Now().UnixNano()) // "+ idling"
		s.kickLocked()
	} else {
		// Its writer may not take the values it was counted for.
		s.releaseGateLocked()
	}
	s.mu.Unlock()
	switch {
	case idling && !was:
		s.reg.metrics.IdlingAdd(1)
	case !idling && was:
		s.reg.metrics.IdlingAdd(-1)
	}
}

// EndIdle records that the client left IDLE and returns once no write of
// the session's is under way any more: a Flush that took what was due
// while the client idled has written its lines. The caller (the mailbox's
// Idle) returns before go-imap writes the IDLE command's tagged OK, so
// that nothing the session was told in IDLE lands after it (PlainDraft:
// nothing between DONE and the next command's tagged reply).
func (s *Session) EndIdle() {
	s.SetIdle(false)
	s.flushMu.Lock()
	s.flushMu.Unlock()
}

// StoreUpdate counts an untagged response of kind (EXISTS, EXPUNGE, FETCH)
// that the store sent to the session.
func (s *Session) StoreUpdate(kind string) {
	s.lastWrite.Store(time.Now().UnixNano())
	s.reg.metrics.Pushed(kind, 1)
}

// keepaliveDue makes a keepalive due for the session if its client idles
// and was written nothing for every. It is called with Registry.mu held.
func (s *Session) keepaliveDue(now time.Time, every time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.idling || s.gone || now.Sub(time.Unix(0, s.lastWrite.Load())) < every {
		return
	}
	// One per interval, however long its write then takes.
	s.lastWrite.Store(now.UnixNano())
	s.keepalive = true
	s.kickLocked()
}

// toldStatusLocked reports whether the session may ever be told a STATUS:
// a plain session under a policy that tells plain clients about other
// mailboxes, a NOTIFY session that asked for anything and was not told
// NOTIFICATIONOVERFLOW since.
func (s *Session) toldStatusLocked() bool {
	if s.notify == nil {
		return s.reg.policy.Plain.TellsMailboxes()
	}
	return !s.lost && !s.notify.Empty()
}

// markStatus records that the account has a new STATUS value of mailbox
// key, made by a change at since (zero: unknown). When the session's
// writer is about to take it (the client can be written to and no write is
// under way), the session is counted in gate. It is called with
// Registry.mu held.
func (s *Session) markStatus(key string, since time.Time, gate *takeGate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || !s.toldStatusLocked() {
		return
	}
	if s.dirty == nil {
		s.dirty = map[string]struct{}{}
	}
	s.dirty[key] = struct{}{}
	s.dirtyAt = earliest(s.dirtyAt, since)
	if s.gate == nil && s.writableLocked() && !s.flushing {
		s.gate = gate
		gate.add()
	}
	s.kickLocked()
}

// renameStatus moves what the session has yet to take from the keys of
// renamed to their new keys (the versions it took are kept by the state's
// id, which a rename keeps). It is called with Registry.mu held.
func (s *Session) renameStatus(renamed map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for from, to := range renamed {
		if _, ok := s.dirty[from]; ok {
			delete(s.dirty, from)
			s.dirty[to] = struct{}{}
		}
	}
}

// releaseGateLocked ends the session's part in the worker's gate. It is
// called with s.mu held.
func (s *Session) releaseGateLocked() {
	if s.gate != nil {
		s.gate.release()
		s.gate = nil
	}
}

// dropLocked drops what is due but the FETCH of new messages. It is
// called with s.mu held.
func (s *Session) dropLocked() {
	s.queue, s.overflow, s.lost = nil, false, false
	clear(s.dirty)
	s.dirtyAt = time.Time{}
	s.releaseGateLocked()
}

// applyName records in names that the session was handed the mailbox
// event of it (told, or its own change). Where the session shares the
// account's set of the version just before the event, it takes the
// account's set of the event (it.names); otherwise it changes a copy of
// its own. It reports whether the session has a copy of its own.
func (s *Session) applyName(it item) (own bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		return false
	}
	switch it.ev.Kind {
	case event.MailboxCreate, event.SubscriptionChange, event.MailboxDelete, event.MailboxRename:
	default:
		return s.namesOwn
	}
	// A client told of a rename with OLDNAME knows that the mailbox's
	// children moved with it (RFC 3501 RENAME), as the account's set says;
	// a plain client was told the old name is gone and the new one exists,
	// and of each child by its own event (which an overflow may have
	// dropped): its set moves only what it was told.
	oldName := s.notify != nil || s.reg.policy.Plain == mapping.AnyTime
	if !s.namesOwn && it.names != nil && it.namesGen == s.namesGen+1 && (oldName || it.ev.Kind != event.MailboxRename) {
		s.names, s.namesGen = it.names, it.namesGen
		return false
	}
	if !s.namesOwn {
		s.names, s.namesOwn = cloneNames(s.names), true
	}
	applyNameEvent(s.names, it.ev, oldName)
	return true
}

// enqueue queues the mailbox event it for the session.
func (s *Session) enqueue(it item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || s.overflow || s.lost {
		return // lost: told nothing until its next NOTIFY SET
	}
	switch {
	case len(s.queue) >= QueueLimit && s.notify != nil:
		// A NOTIFY client is told that notifications were lost and asks
		// again (RFC 5465 section 5.8), instead of a resynchronisation.
		s.dropLocked()
		s.lost = true
		s.reg.metrics.Overflow()
		s.reg.log.Msg("session queue overflow, NOTIFICATIONOVERFLOW", "account", s.account)
	case len(s.queue) >= QueueLimit:
		s.queue = nil
		s.overflow = true
		s.reg.metrics.Overflow()
		s.reg.metrics.Resync("overflow")
		s.reg.log.Msg("session queue overflow, resynchronising by state", "account", s.account)
	default:
		s.queue = append(s.queue, it)
	}
	s.kickLocked()
}

// dueLocked reports whether anything is due that the writer may write
// (the FETCH of new messages only in IDLE).
func (s *Session) dueLocked() bool {
	return len(s.queue) > 0 || len(s.dirty) > 0 || (s.fetchDue && s.idling) || s.keepalive || s.overflow || s.lost
}

// kickLocked starts the session's writer goroutine when there is work for
// it and none runs: what is due while the client can be written to, or
// leaving the registry once the connection is gone (hooks unregister a
// session at its Logout, which go-imap calls when a connection closes;
// this covers an Out that reports LoggedOut first). It is called with
// s.mu held.
func (s *Session) kickLocked() {
	if s.writing || s.gone {
		return
	}
	if (!s.writableLocked() || !s.dueLocked()) && !s.loggedOut() {
		return
	}
	// The registry refuses once it is closing: sessions get nothing more.
	s.writing = s.reg.goSafe("session", s.account, s.write)
}

// writableLocked reports whether the session's writer may write now: while
// the client idles, and at any time for a client that asked with NOTIFY
// (RFC 5465 lets the server write between responses in any state).
func (s *Session) writableLocked() bool { return s.idling || s.notify != nil }

// loggedOut reports whether the client's connection is gone.
func (s *Session) loggedOut() bool {
	select {
	case <-s.out.LoggedOut():
		return true
	default:
		return false
	}
}

// write is the writer goroutine: it flushes while the client can be
// written to and something is due, and ends when nothing is left, the
// client leaves IDLE, the session leaves the registry or the registry
// closes.
func (s *Session) write() {
	ended := false
	defer func() {
		if !ended { // a panic (logged by goSafe): the next item starts a writer again
			s.mu.Lock()
			s.writing = false
			s.releaseGateLocked()
			s.mu.Unlock()
		}
	}()
	for {
		closing := false
		select {
		case <-s.reg.stop:
			closing = true
		default:
		}
		s.mu.Lock()
		gone := !s.gone && !closing && s.loggedOut()
		if s.gone || closing || (!gone && (!s.writableLocked() || !s.dueLocked())) {
			s.writing = false
			s.releaseGateLocked()
			ended = true
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if gone {
			s.reg.Unregister(s)
			continue
		}
		s.flush(false)
	}
}

// leave marks the session gone: nothing more is due to it and its FETCH
// retry is stopped. A running writer ends after its current write.
func (s *Session) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
	s.dropLocked()
	s.fetchDue, s.keepalive = false, false
	if s.retry != nil {
		s.retry.Stop()
	}
}
