// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

type itemKind uint8

const (
	itemEvent     itemKind = iota // a mailbox event: mapping decides
	itemStatus                    // a fresh STATUS value of a mailbox
	itemFetchNew                  // the store announced new messages in the selected mailbox
	itemKeepalive                 // the idling client was written nothing for a while
)

// keepaliveLine is what an idling client is written when it has been
// written nothing for the keepalive interval (Registry.StartKeepalive).
const keepaliveLine = "* OK Still here\r\n"

// overflowLine tells a NOTIFY client that notifications were lost: from
// then on it is told nothing until its next NOTIFY SET (RFC 5465 section
// 5.8).
const overflowLine = "* OK [NOTIFICATIONOVERFLOW] notifications were lost; send NOTIFY SET again\r\n"

type item struct {
	kind    itemKind
	ev      event.Event
	mailbox string
	status  mapping.Status
	origin  uint64
	at      time.Time // when the store changed (zero: unknown)
	// resync marks an item of a resynchronisation by state: their number
	// is bounded by the account's mailboxes, not by traffic, and they are
	// never dropped (dropping them would overflow the session again).
	resync bool
	// handoff, on a STATUS value handed to every session, counts the item
	// taken when a Flush takes it (or it is dropped), if prompt: it was
	// queued while the client idled and no write was under way, so that
	// the session's writer is about to take it.
	handoff *handoff
	prompt  bool
	// names, on a mailbox event, is the account's mailbox set once it was
	// applied, version namesGen (account.names); nil when unknown.
	names    map[string]imap.MailboxInfo
	namesGen uint64
	// subscribed and delimiter are facts of the item's mailbox (the
	// event's, or the STATUS value's) when it was queued, for NOTIFY
	// filters (mapping.MailboxFacts).
	subscribed bool
	delimiter  string
}

// handoff is one STATUS value of a mailbox that the account's worker
// handed to its sessions. Before it queries the mailbox again, the worker
// waits (briefly, see awaitTaken) until the sessions whose writer was about
// to take the value have taken it: a value still queued when the next one
// comes is replaced by it, and a session whose writer lags behind the
// worker would be told only every other value.
type handoff struct {
	mu    sync.Mutex
	want  int // prompt items queued; -1 until the worker has counted them
	taken int // prompt items taken
	done  chan struct{}
}

func newHandoff() *handoff { return &handoff{want: -1, done: make(chan struct{})} }

// take counts one prompt item taken.
func (h *handoff) take() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.taken++
	h.closeLocked()
}

// counted records how many prompt items the worker queued.
func (h *handoff) counted(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.want = n
	h.closeLocked()
}

func (h *handoff) closeLocked() {
	if h.want >= 0 && h.taken >= h.want {
		select {
		case <-h.done:
		default:
			close(h.done)
		}
	}
}

// takeAll counts the prompt items of a queue taken (by Flush, or dropped).
func takeAll(queue []item) {
	for _, it := range queue {
		if it.handoff != nil && it.prompt {
			it.handoff.take()
		}
	}
}

// Session is one IMAP connection of an account that has a mailbox selected.
//
// Its queue is bounded by QueueLimit: when a slow or stuck client lets it
// overflow, the queue is dropped and the session is resynchronised by state
// (a fresh STATUS of every mailbox in scope; what it was already told is not
// repeated). A session has no goroutine of its own: while the client IDLEs,
// queuing starts a writer goroutine, which ends once the queue is empty;
// Flush writes from the caller's goroutine (NOOP/CHECK).
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
	// flushing: a Flush has taken the queue and is writing it.
	writing  bool
	flushing bool
	// gone: the session left the registry (or the registry closed): it is
	// queued nothing more and no writer starts for it.
	gone     bool
	overflow bool
	queue    []item
	// notify is what the client asked for with NOTIFY (nil: a plain
	// session, told what Policy.Plain says); lost says notifications for
	// it were lost, to be told with NOTIFICATIONOVERFLOW.
	notify *mapping.Interest
	lost   bool
	// fetchLeft: the writer of a NOTIFY session outside IDLE left the
	// FETCH of new messages to the next Poll (fetchLeftAt: when the store
	// announced them).
	fetchLeft   bool
	fetchLeftAt time.Time
	// fetchTries counts FetchNew calls that found an announced message not
	// yet readable; they are retried with backoff, up to maxFetchTries.
	fetchTries int
	// retryAt is when the store announced the messages a retry fetches
	// (push latency is measured from there, not from the retry).
	retryAt time.Time
	// retry queues the FETCH retry when it fires; nil until the first one.
	retry *time.Timer
	// names is the mailbox set (by key) the session has been told: the
	// account's at registration and every mailbox event it was handed
	// since; nil when unknown. An overflow resynchronises it
	// (account.relistSessions). Unless namesOwn is set it is the account's
	// map of version namesGen, shared and never modified (applyName
	// copies it first).
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

	// lastWrite is when the client was last written something (UnixNano):
	// the store's lines, ours, or the start of IDLE.
	lastWrite atomic.Int64

	// flushMu serialises Flush between the writer goroutine and the
	// command goroutine; view is only touched under it. view is nil until
	// the session is handed its first STATUS value.
	flushMu sync.Mutex
	view    *mapping.StatusView
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
// writer for what is queued.
func (s *Session) SetIdle(idling bool) {
	s.mu.Lock()
	was := s.idling
	s.idling = idling
	if idling {
		s.lastWrite.Store(time.Now().UnixNano()) // "+ idling"
		s.kickLocked()
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
// the session's is under way any more: a Flush that took the queue while
// the client idled has written its lines. The caller (the mailbox's Idle)
// returns before go-imap writes the IDLE command's tagged OK, so that
// nothing the session was told in IDLE lands after it (PlainDraft: nothing
// between DONE and the next command's tagged reply).
func (s *Session) EndIdle() {
	s.SetIdle(false)
	s.flushMu.Lock()
	s.flushMu.Unlock()
}

// setNotify is Registry.SetNotify for this session.
func (s *Session) setNotify(in mapping.Interest, initial []InitialStatus) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return ErrClosed
	}
	// What was queued for the plain session is not what the client asks
	// for now; only the store's announcement of new messages stays (the
	// FETCH that follows EXISTS, if the new request asks for one).
	takeAll(s.queue)
	kept := s.queue[:0:0]
	for _, it := range s.queue {
		if it.kind == itemFetchNew {
			kept = append(kept, it)
		}
	}
	s.queue, s.overflow, s.lost = kept, false, false
	s.notify = &in
	s.mu.Unlock()

	if len(initial) > 0 {
		if s.view == nil {
			s.view = mapping.NewStatusView(s.reg.policy.StatusItems)
		}
		// With the items RFC 5465 requires there; the view records the
		// values of the items it tells later.
		items := mapping.InitialStatusItems(s.reg.policy.StatusItems)
		lines := make([][]byte, 0, len(initial))
		for _, st := range initial {
			s.view.Forget(st.Mailbox)
			s.view.Update(st.Mailbox, st.Status)
			lines = append(lines, mapping.StatusLine(st.Mailbox, items, st.Status))
		}
		if err := s.out.Write(lines); err != nil {
			return err
		}
		s.lastWrite.Store(time.Now().UnixNano())
		s.reg.metrics.Pushed("STATUS", len(lines))
	}
	s.mu.Lock()
	s.kickLocked()
	s.mu.Unlock()
	return nil
}

// notificationsLost records that events for the session may have been
// lost (a broker reconnect): a NOTIFY client is told with
// NOTIFICATIONOVERFLOW and then told nothing until its next NOTIFY SET.
// It is called with Registry.mu held.
func (s *Session) notificationsLost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || s.notify == nil || s.notify.Empty() {
		return
	}
	takeAll(s.queue)
	s.queue, s.lost = nil, true
	s.kickLocked()
}

// commitWait bounds how long the FETCH of messages the store announced to
// an idling client waits for the store's commit (committed) before it is
// tried anyway (a change whose event comes late, or never).
const commitWait = 2 * time.Millisecond

// NewMessages records that the store announced new messages (EXISTS) in the
// selected mailbox. It only queues: it is called from inside the store's
// update callback, where the mailbox must not be read.
//
// To an idling client go-imap-sql announces an APPEND's message from inside
// the APPEND's transaction, so a FETCH tried at once finds it unreadable:
// the read is wasted, and it competes with the APPEND's commit (and with
// the acting client's tagged OK) for the CPU and the database. Unless a
// commit in the mailbox came that no FETCH has served yet, the FETCH then
// waits for the commit (the hooks publish the change once the store call
// returned), at most commitWait. Outside IDLE (the mailbox's Poll, after
// the command) the store has committed: the FETCH is queued at once.
func (s *Session) NewMessages() {
	now := time.Now()
	s.mu.Lock()
	if !s.idling || s.gone || s.commits != s.commitsFetched {
		s.mu.Unlock()
		s.enqueue(item{kind: itemFetchNew, at: now})
		return
	}
	if s.retryAt.IsZero() {
		s.retryAt = now
	}
	if !s.awaitCommit && s.fetchTries == 0 {
		// With fetchTries set a retry is armed already, and committed
		// queues it.
		s.awaitCommit = true
		if s.retry == nil {
			s.retry = time.AfterFunc(commitWait, s.retryFetch)
		} else {
			s.retry.Reset(commitWait)
		}
	}
	s.mu.Unlock()
}

// committed records that the store committed new messages in mailbox (the
// MessageAppend or MessageNew event of the change). go-imap-sql announces a
// new message (EXISTS) before its transaction commits, so the FETCH that
// follows the announcement may have found it unreadable and be waiting for
// its retry: it is retried now. It is called with Registry.mu held.
func (s *Session) committed(mailbox string) {
	s.mu.Lock()
	if !mapping.SameMailbox(s.selected, mailbox) {
		s.mu.Unlock()
		return
	}
	s.commits++
	waiting := s.fetchTries > 0 || s.awaitCommit
	at := s.retryAt
	if s.awaitCommit {
		// The FETCH goes now; the fallback is not needed.
		s.awaitCommit = false
		s.retryAt = time.Time{}
		s.retry.Stop()
	}
	s.mu.Unlock()
	if waiting {
		s.enqueue(item{kind: itemFetchNew, at: at})
	}
}

// StoreUpdate counts an untagged response of kind (EXISTS, EXPUNGE, FETCH)
// that the store sent to the session.
func (s *Session) StoreUpdate(kind string) {
	s.lastWrite.Store(time.Now().UnixNano())
	s.reg.metrics.Pushed(kind, 1)
}

// keepaliveDue queues a keepalive for the session if its client idles and
// was written nothing for every. It is called with Registry.mu held.
func (s *Session) keepaliveDue(now time.Time, every time.Duration) {
	s.mu.Lock()
	due := s.idling && !s.gone && now.Sub(time.Unix(0, s.lastWrite.Load())) >= every
	if due {
		// One per interval, however long its write then takes.
		s.lastWrite.Store(now.UnixNano())
	}
	s.mu.Unlock()
	if due {
		s.enqueue(item{kind: itemKeepalive})
	}
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

// applyNameEvent applies a mailbox event to a mailbox set.
//
// A mailbox's attributes in the set say \Subscribed as the store's LIST
// does (ev.Subscribed), so that the set tells NOTIFY's subscribed filter
// which mailboxes are subscribed (subscribedIn).
//
// With children, a rename moves the mailbox's children with it, as the
// store's RENAME does (the children's own events then find them moved);
// without, it moves the named mailbox alone.
func applyNameEvent(names map[string]imap.MailboxInfo, ev event.Event, children bool) {
	attrs := mapping.SubscriptionAttrs(ev.Attrs, ev.Subscribed)
	switch ev.Kind {
	case event.MailboxCreate, event.SubscriptionChange:
		names[mapping.MailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: attrs}
	case event.MailboxDelete:
		delete(names, mapping.MailboxKey(ev.Mailbox))
	case event.MailboxRename:
		if !mapping.IsInbox(ev.OldMailbox) {
			delete(names, mapping.MailboxKey(ev.OldMailbox))
			if children && ev.Delimiter != "" {
				prefix := mapping.MailboxKey(ev.OldMailbox) + ev.Delimiter
				var moved []imap.MailboxInfo
				for key, info := range names {
					if strings.HasPrefix(key, prefix) {
						delete(names, key)
						info.Name = ev.Mailbox + info.Name[len(ev.OldMailbox):]
						moved = append(moved, info)
					}
				}
				for _, info := range moved {
					names[mapping.MailboxKey(info.Name)] = info
				}
			}
		}
		names[mapping.MailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: attrs}
	}
}

// subscribedIn reports whether names (nil: unknown) says mailbox key is
// subscribed, and its delimiter.
func subscribedIn(names map[string]imap.MailboxInfo, key string) (subscribed bool, delimiter string) {
	info, ok := names[key]
	if !ok {
		return false, ""
	}
	return mapping.IsSubscribed(info.Attributes), info.Delimiter
}

// enqueue queues it for the session. It reports whether the item is
// prompt: queued while the client idles and no write is under way, so
// that the writer it starts (or that is starting) takes it at once.
func (s *Session) enqueue(it item) (prompt bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone || s.overflow {
		return false
	}
	if s.lost {
		return false // told nothing until its next NOTIFY SET
	}
	if len(s.queue) >= QueueLimit && !it.resync && s.notify != nil {
		// A NOTIFY client is told that notifications were lost and asks
		// again (RFC 5465 section 5.8), instead of a resynchronisation.
		takeAll(s.queue)
		s.queue, s.lost = nil, true
		s.reg.metrics.Overflow()
		s.reg.log.Msg("session queue overflow, NOTIFICATIONOVERFLOW", "account", s.account)
	} else if len(s.queue) >= QueueLimit && !it.resync {
		takeAll(s.queue)
		s.queue = nil
		s.overflow = true
		s.reg.metrics.Overflow()
		s.reg.metrics.Resync("overflow")
		s.reg.log.Msg("session queue overflow, resynchronising by state", "account", s.account)
	} else {
		it.prompt = it.handoff != nil && s.idling && !s.flushing
		prompt = it.prompt
		s.queue = append(s.queue, it)
	}
	s.kickLocked()
	return prompt
}

// kickLocked starts the session's writer goroutine when there is work for
// it and none runs: what is queued while the client idles, or leaving the
// registry once the connection is gone (hooks unregister a session at its
// Logout, which go-imap calls when a connection closes; this covers an Out
// that reports LoggedOut first). It is called with s.mu held.
func (s *Session) kickLocked() {
	if s.writing || s.gone {
		return
	}
	if !s.writableLocked() || (len(s.queue) == 0 && !s.overflow && !s.lost) {
		if !s.loggedOut() {
			return
		}
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

// write is the writer goroutine: it flushes while the client idles and
// something is queued, and ends when nothing is left, the client leaves
// IDLE, the session leaves the registry or the registry closes.
func (s *Session) write() {
	ended := false
	defer func() {
		if !ended { // a panic (logged by goSafe): the next item starts a writer again
			s.mu.Lock()
			s.writing = false
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
		if s.gone || closing || (!gone && (!s.writableLocked() || (len(s.queue) == 0 && !s.overflow && !s.lost))) {
			s.writing = false
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

// leave marks the session gone: nothing more is queued for it, its queue
// is dropped and its FETCH retry stopped. A running writer ends after its
// current write.
func (s *Session) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = true
	takeAll(s.queue)
	s.queue, s.overflow = nil, false
	if s.retry != nil {
		s.retry.Stop()
	}
}

// retryFetch runs when the FETCH retry's timer fires (in the timer's
// goroutine): it queues the retry for the writer or the next Flush.
func (s *Session) retryFetch() {
	defer func() {
		if p := recover(); p != nil {
			s.reg.log.Printf("panic in FETCH retry: %v\n%s", p, debug.Stack())
		}
	}()
	s.mu.Lock()
	at := s.retryAt
	s.retryAt = time.Time{}
	s.awaitCommit = false
	s.mu.Unlock()
	s.enqueue(item{kind: itemFetchNew, at: at})
}

// Flush writes what is queued for the session. The decorators call it
// from the session's command goroutine at NOOP/CHECK and after commands
// (the mailbox's Poll); the session's writer goroutine flushes too.
func (s *Session) Flush() { s.flush(true) }

// flush writes what is queued. atPoll: called from the command goroutine
// at the mailbox's Poll, where the module's FETCH of new messages follows
// the store's EXISTS; the writer goroutine of a NOTIFY session that is not
// in IDLE leaves that FETCH to the next Poll (the store's EXISTS goes out
// only there).
func (s *Session) flush(atPoll bool) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	// Flush also runs on the client's command goroutine: a bug here must
	// cost this session its notifications, not maddy its process.
	defer func() {
		if p := recover(); p != nil {
			s.reg.log.Printf("panic while writing notifications: %v\n%s", p, debug.Stack())
		}
	}()
	select {
	case <-s.reg.stop:
		return // closed: sessions get nothing more
	default:
	}

	p := s.reg.policy
	s.mu.Lock()
	view := mapping.SessionView{ID: s.id, Account: s.account, Selected: s.selected, Idling: s.idling, Notify: s.notify}
	// Under plain_clients draft, STATUS and LIST wait for IDLE; so does the
	// resynchronisation of a queue that overflowed. A NOTIFY client is told
	// at once.
	_, tellNow := mapping.PlainGate(p, view)
	tellNow = tellNow || view.Notify != nil
	fetchNow := atPoll || view.Idling
	queue, overflow, lost := s.queue, s.overflow, s.lost
	s.queue, s.overflow = nil, overflow && !tellNow && p.Plain.TellsMailboxes()
	if lost {
		// NOTIFICATIONOVERFLOW: the session behaves as after NOTIFY NONE.
		s.notify, s.lost, view.Notify = &mapping.Interest{}, false, &mapping.Interest{}
	}
	// The FETCH of new messages the writer left for this Poll.
	fetchLeft, fetchLeftAt := false, time.Time{}
	if fetchNow && s.fetchLeft {
		fetchLeft, fetchLeftAt = true, s.fetchLeftAt
		s.fetchLeft, s.fetchLeftAt = false, time.Time{}
	}
	s.flushing = true
	takeAll(queue)
	fetcher := s.fetcher
	s.mu.Unlock()
	var deferred []item
	defer func() {
		s.mu.Lock()
		s.flushing = false
		if len(deferred) > 0 && !s.gone && !s.overflow {
			// Ahead of what came meanwhile: the order is kept.
			s.queue = append(deferred, s.queue...)
			s.kickLocked()
		}
		s.mu.Unlock()
	}()

	if overflow && tellNow {
		// Resynchronise by state now: wait until the account worker has
		// queued every STATUS in scope, so that this Flush writes them.
		if done := s.reg.requestResync(s); done != nil {
			select {
			case <-done:
			case <-s.reg.stop:
				return
			case <-s.out.LoggedOut():
				return
			}
			s.mu.Lock()
			takeAll(s.queue)
			queue = append(queue, s.queue...)
			s.queue = nil
			s.mu.Unlock()
		}
	}

	var (
		lines    [][]byte
		counts   [3]int
		oldest   [3]time.Time
		fetchNew bool
		fetchAt  time.Time
	)
	note := func(k int, at time.Time, n int) {
		counts[k] += n
		if !at.IsZero() && (oldest[k].IsZero() || at.Before(oldest[k])) {
			oldest[k] = at
		}
	}
	// A STATUS value is a state: only the newest one per mailbox is worth
	// telling; an older one still counts as someone else's change.
	lastStatus := map[string]int{}
	otherOrigin := map[string]bool{}
	shareNames := false
	keepalive := false
	for i, it := range queue {
		if it.kind == itemStatus {
			key := mapping.MailboxKey(it.mailbox)
			lastStatus[key] = i
			if it.origin == 0 || it.origin != s.id {
				otherOrigin[key] = true
			}
		}
	}
	if lost {
		lines = append(lines, []byte(overflowLine))
	}
	for i, it := range queue {
		if !tellNow && (it.kind == itemEvent || it.kind == itemStatus) {
			deferred = append(deferred, it)
			continue
		}
		if !fetchNow && it.kind == itemFetchNew {
			s.mu.Lock()
			if !s.fetchLeft || (!it.at.IsZero() && it.at.Before(s.fetchLeftAt)) {
				s.fetchLeftAt = it.at
			}
			s.fetchLeft = true
			s.mu.Unlock()
			continue
		}
		switch it.kind {
		case itemEvent:
			view.Subscribed = it.subscribed
			plan := mapping.Map(p, it.ev, view)
			if plan.Action == mapping.Defer {
				deferred = append(deferred, it)
				continue
			}
			// A plain client told of another session's rename takes the
			// new name for a new mailbox (no OLDNAME); every client takes a
			// created one for empty: its view must say so even before its
			// first STATUS.
			listed := p.Plain != mapping.AnyTime && view.Notify == nil && it.ev.Origin != s.id
			if s.view == nil && (it.ev.Kind == event.MailboxRename || it.ev.Kind == event.MailboxCreate) {
				// What the client takes a new or renamed mailbox to hold.
				s.view = mapping.NewStatusView(p.StatusItems)
			}
			switch {
			case s.view == nil:
			case listed:
				s.view.ApplyListed(it.ev, s.id)
			default:
				s.view.Apply(it.ev, s.id)
			}
			if s.applyName(it) {
				shareNames = true
			}
			if plan.Action == mapping.WriteLines {
				lines = append(lines, plan.Lines...)
				note(kindLIST, it.at, len(plan.Lines))
			}
		case itemKeepalive:
			keepalive = true
		case itemFetchNew:
			fetchNew = true
			if fetchAt.IsZero() {
				fetchAt = it.at
			}
		case itemStatus:
			key := mapping.MailboxKey(it.mailbox)
			if lastStatus[key] != i {
				continue
			}
			if !otherOrigin[key] {
				// Its own change: the client knows it changed the mailbox
				// but was not sent these values, which may also hold
				// another session's change (committed before the query,
				// published after it). The next value is told whatever
				// it is (mapping.StatusView.Forget).
				if s.view != nil {
					s.view.Forget(it.mailbox)
				}
				continue
			}
			if _, ok := mapping.StatusGate(p, view, it.mailbox, it.delimiter, it.subscribed); !ok {
				continue // not asked for (NOTIFY)
			}
			if s.view == nil {
				s.view = mapping.NewStatusView(p.StatusItems)
			}
			if s.view.OnlyFlagsChanged(it.mailbox, it.status) && !mapping.WantsFlagChange(view, it.mailbox, it.delimiter, it.subscribed) {
				// A flag change a NOTIFY client did not ask for (RFC 5465
				// section 5.1): not told, nor recorded as told.
				continue
			}
			line, changed := s.view.Update(it.mailbox, it.status)
			if !changed || mapping.SameMailbox(it.mailbox, view.Selected) {
				continue // recorded; the client knows (or has it SELECTed)
			}
			lines = append(lines, line)
			note(kindSTATUS, it.at, 1)
		}
	}
	if shareNames {
		s.reg.shareNames(s)
	}
	// The dropped queue may have held the store's announcement of new
	// messages: fetch what was announced and not yet fetched.
	fetchNew = fetchNew || overflow || fetchLeft
	if fetchAt.IsZero() {
		fetchAt = fetchLeftAt
	}
	if items := mapping.NewMessageItems(p, view); fetchNew && fetcher != nil && items != nil {
		// The FETCH of new messages goes first: it follows the store's
		// EXISTS, and the STATUS/LIST lines come after it.
		if !s.fetchNew(fetcher, items, fetchAt) {
			return
		}
	}
	if len(lines) == 0 && keepalive && view.Idling {
		// Nothing else of ours goes out in this flush.
		lines = append(lines, []byte(keepaliveLine))
		counts[kindKeepalive]++
	}
	if len(lines) == 0 {
		return
	}
	if err := s.out.Write(lines); err != nil {
		s.reg.Unregister(s)
		return
	}
	s.lastWrite.Store(time.Now().UnixNano())
	now := time.Now()
	for k, n := range counts {
		if n == 0 {
			continue
		}
		s.reg.metrics.Pushed(kindNames[k], n)
		if !oldest[k].IsZero() {
			s.reg.metrics.Latency(kindNames[k], now.Sub(oldest[k]).Seconds())
		}
	}
}

// maxFetchTries bounds the retries for a new message that the store
// announced but cannot read yet (its transaction still open): 5 ms doubling,
// about 2.5 s in all.
const maxFetchTries = 9

// fetchNew sends the FETCH lines of new messages and schedules a retry when
// an announced message is not readable yet. It reports false when the
// connection is gone.
func (s *Session) fetchNew(f Fetcher, items mapping.FetchItems, at time.Time) bool {
	s.mu.Lock()
	giveUp := s.fetchTries >= maxFetchTries
	commits := s.commits
	s.mu.Unlock()
	n := 0
	complete, err := f.FetchNew(items, func(lines [][]byte) error {
		if err := s.out.Write(lines); err != nil {
			return err
		}
		s.lastWrite.Store(time.Now().UnixNano())
		n += len(lines)
		return nil
	}, giveUp)
	if n > 0 {
		s.reg.metrics.Pushed("FETCH", n)
		if !at.IsZero() {
			s.reg.metrics.Latency("FETCH", time.Since(at).Seconds())
		}
	}
	if errors.Is(err, ErrClosed) {
		s.reg.Unregister(s)
		return false
	}
	if err != nil {
		s.reg.log.Error("cannot read new messages for FETCH", err, "account", s.account)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if complete {
		s.commitsFetched = commits
	}
	if complete || giveUp {
		if giveUp && !complete {
			s.reg.log.Msg("new message announced by the store never became readable; no FETCH for it", "account", s.account)
		}
		s.fetchTries = 0
		return true
	}
	delay := 5 * time.Millisecond << s.fetchTries
	s.fetchTries++
	if s.commits != commits {
		// The store committed while this FETCH read: try again now.
		delay = 0
	}
	if s.retryAt.IsZero() || (!at.IsZero() && at.Before(s.retryAt)) {
		s.retryAt = at
	}
	if s.gone {
		return true
	}
	if s.retry == nil {
		s.retry = time.AfterFunc(delay, s.retryFetch)
	} else {
		s.retry.Reset(delay)
	}
	return true
}

const (
	kindLIST = iota
	kindSTATUS
	kindKeepalive
)

var kindNames = [...]string{kindLIST: "LIST", kindSTATUS: "STATUS", kindKeepalive: "keepalive"}

// requestResync asks the account worker for every STATUS in scope for s.
// The channel it returns is closed once they are queued; nil when there is
// no worker to ask (registry closed, session gone).
func (r *Registry) requestResync(s *Session) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[s.account]
	if a == nil || r.closed {
		return nil
	}
	done := make(chan struct{})
	a.resync = append(a.resync, resyncReq{s: s, done: done})
	a.scheduleLocked(r)
	return done
}
