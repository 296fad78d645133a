// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

type itemKind uint8

const (
	itemEvent    itemKind = iota // a mailbox event: mapping decides
	itemStatus                   // a fresh STATUS value of a mailbox
	itemFetchNew                 // the store announced new messages in the selected mailbox
)

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
}

// Session is one IMAP connection of an account that has a mailbox selected.
//
// Its queue is bounded by QueueLimit: when a slow or stuck client lets it
// overflow, the queue is dropped and the session is resynchronised by state
// (a fresh STATUS of every mailbox in scope; what it was already told is not
// repeated). Its goroutine writes while the client IDLEs; Flush writes from
// the caller's goroutine (NOOP/CHECK).
type Session struct {
	reg     *Registry
	id      uint64
	account string
	out     Out

	mu       sync.Mutex
	selected string
	fetcher  Fetcher
	idling   bool
	queue    []item
	overflow bool
	// fetchTries counts FetchNew calls that found an announced message not
	// yet readable; they are retried with backoff, up to maxFetchTries.
	fetchTries int
	// retryAt is when the store announced the messages a retry fetches
	// (push latency is measured from there, not from the retry).
	retryAt time.Time
	// names is the mailbox set (by key) the session has been told: the
	// account's at registration and every mailbox event it was handed
	// since; nil when unknown. An overflow resynchronises it
	// (account.relistSessions).
	names map[string]imap.MailboxInfo
	// commits counts the store's commits of new messages in the selected
	// mailbox (committed); a FETCH that found a message unreadable retries
	// at once if one came meanwhile.
	commits uint64

	// flushMu serialises Flush between the session goroutine and the
	// command goroutine; view is only touched under it.
	flushMu sync.Mutex
	view    *mapping.StatusView

	wake      chan struct{}
	retry     chan time.Duration // asks the session goroutine for a FETCH retry
	gone      chan struct{}
	closeOnce sync.Once
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
	s.view.Forget(mailbox)
	s.flushMu.Unlock()
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

// SetIdle records whether the client is in IDLE; entering IDLE wakes the
// session goroutine to write what is queued.
func (s *Session) SetIdle(idling bool) {
	s.mu.Lock()
	was := s.idling
	s.idling = idling
	s.mu.Unlock()
	switch {
	case idling && !was:
		s.reg.metrics.IdlingAdd(1)
	case !idling && was:
		s.reg.metrics.IdlingAdd(-1)
	}
	if idling {
		s.wakeUp()
	}
}

// NewMessages records that the store announced new messages (EXISTS) in the
// selected mailbox. It only queues: it is called from inside the store's
// update callback, where the mailbox must not be read.
func (s *Session) NewMessages() {
	s.enqueue(item{kind: itemFetchNew, at: time.Now()})
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
	waiting := s.fetchTries > 0
	at := s.retryAt
	s.mu.Unlock()
	if waiting {
		s.enqueue(item{kind: itemFetchNew, at: at})
	}
}

// StoreUpdate counts an untagged response of kind (EXISTS, EXPUNGE, FETCH)
// that the store sent to the session.
func (s *Session) StoreUpdate(kind string) {
	s.reg.metrics.Pushed(kind, 1)
}

// applyName records in names that the session was handed ev (told, or
// its own change).
func (s *Session) applyName(ev event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		return
	}
	switch ev.Kind {
	case event.MailboxCreate, event.SubscriptionChange:
		s.names[mailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: ev.Attrs}
	case event.MailboxDelete:
		delete(s.names, mailboxKey(ev.Mailbox))
	case event.MailboxRename:
		if !mapping.IsInbox(ev.OldMailbox) {
			delete(s.names, mailboxKey(ev.OldMailbox))
		}
		s.names[mailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: ev.Attrs}
	}
}

func (s *Session) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Session) enqueue(it item) {
	s.mu.Lock()
	if s.overflow {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= QueueLimit && !it.resync {
		s.queue = nil
		s.overflow = true
		s.mu.Unlock()
		s.reg.metrics.Overflow()
		s.reg.metrics.Resync("overflow")
		s.reg.log.Msg("session queue overflow, resynchronising by state", "account", s.account)
		s.wakeUp()
		return
	}
	s.queue = append(s.queue, it)
	idling := s.idling
	s.mu.Unlock()
	if idling {
		s.wakeUp()
	}
}

func (s *Session) run() {
	// However the goroutine ends (logout, close, a panic recovered by
	// goSafe), the session leaves the registry.
	defer s.reg.Unregister(s)
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		select {
		case d := <-s.retry:
			if retry == nil {
				retry = time.NewTimer(d)
			} else {
				retry.Reset(d)
			}
			retryC = retry.C
		case <-retryC:
			retryC = nil
			s.mu.Lock()
			at := s.retryAt
			s.retryAt = time.Time{}
			s.mu.Unlock()
			s.enqueue(item{kind: itemFetchNew, at: at})
		case <-s.wake:
			s.mu.Lock()
			idling := s.idling
			s.mu.Unlock()
			if idling {
				s.Flush()
			}
		case <-s.out.LoggedOut():
			return
		case <-s.gone:
			return
		case <-s.reg.stop:
			return
		}
	}
}

// Flush writes what is queued for the session. It is called by the
// session's goroutine while the client IDLEs, and by the decorators from the
// session's command goroutine at NOOP/CHECK.
func (s *Session) Flush() {
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

	s.mu.Lock()
	queue, overflow := s.queue, s.overflow
	s.queue, s.overflow = nil, false
	view := mapping.SessionView{ID: s.id, Account: s.account, Selected: s.selected}
	fetcher := s.fetcher
	s.mu.Unlock()

	if overflow {
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
			queue = append(queue, s.queue...)
			s.queue = nil
			s.mu.Unlock()
		}
	}

	p := s.reg.policy
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
	for i, it := range queue {
		if it.kind == itemStatus {
			key := mailboxKey(it.mailbox)
			lastStatus[key] = i
			if it.origin == 0 || it.origin != s.id {
				otherOrigin[key] = true
			}
		}
	}
	for i, it := range queue {
		switch it.kind {
		case itemEvent:
			plan := mapping.Map(p, it.ev, view)
			s.view.Apply(it.ev, s.id)
			s.applyName(it.ev)
			if plan.Action == mapping.WriteLines {
				lines = append(lines, plan.Lines...)
				note(kindLIST, it.at, len(plan.Lines))
			}
		case itemFetchNew:
			fetchNew = true
			if fetchAt.IsZero() {
				fetchAt = it.at
			}
		case itemStatus:
			key := mailboxKey(it.mailbox)
			if lastStatus[key] != i {
				continue
			}
			line, changed := s.view.Update(it.mailbox, it.status)
			own := !otherOrigin[key]
			if !changed || own || mapping.SameMailbox(it.mailbox, view.Selected) {
				continue // recorded; the client knows (own change, or SELECTed state)
			}
			lines = append(lines, line)
			note(kindSTATUS, it.at, 1)
		}
	}
	// The dropped queue may have held the store's announcement of new
	// messages: fetch what was announced and not yet fetched.
	fetchNew = fetchNew || overflow
	if fetchNew && fetcher != nil && len(p.FetchItems) > 0 &&
		(p.Events.Has(event.MessageNew) || p.Events.Has(event.MessageAppend)) {
		// The FETCH of new messages goes first: it follows the store's
		// EXISTS, and the STATUS/LIST lines come after it.
		if !s.fetchNew(fetcher, p.FetchItems, fetchAt) {
			return
		}
	}
	if len(lines) == 0 {
		return
	}
	if err := s.out.Write(lines); err != nil {
		s.reg.Unregister(s)
		return
	}
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
	select { // the session goroutine owns the timer
	case s.retry <- delay:
	default: // a retry is scheduled already
	}
	return true
}

const (
	kindLIST = iota
	kindSTATUS
	kindFETCH
)

var kindNames = [...]string{kindLIST: "LIST", kindSTATUS: "STATUS", kindFETCH: "FETCH"}

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
