// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"runtime/debug"
	"slices"
	"sort"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// Flush writes what is due to the session. The decorators call it from
// the session's command goroutine at NOOP/CHECK and after commands (the
// mailbox's Poll); the session's writer goroutine flushes too.
func (s *Session) Flush() { s.flush(true) }

// due is what one flush took from the session.
type due struct {
	view    mapping.SessionView
	fetcher Fetcher
	queue   []item
	keys    []string // mailboxes whose STATUS changed, in name order
	dirtyAt time.Time
	resync  bool // the queue overflowed: resynchronise by state
	lost    bool // tell NOTIFICATIONOVERFLOW
	fetch   bool // the FETCH of new messages is due now
	fetchAt time.Time
	alive   bool // a keepalive is due
	// gate is the account worker's gate the session was counted in: it
	// is released once the values of keys were read (releaseGate), so
	// that the worker's next pass cannot replace them before.
	gate     *takeGate
	deferred []item
	kept     []string // keys of values that wait for IDLE
}

// lineSet collects the lines of one flush and what the metrics count.
type lineSet struct {
	lines  [][]byte
	counts [3]int
	oldest [3]time.Time
}

const (
	kindLIST = iota
	kindSTATUS
	kindKeepalive
)

var kindNames = [...]string{kindLIST: "LIST", kindSTATUS: "STATUS", kindKeepalive: "keepalive"}

func (w *lineSet) add(k int, at time.Time, lines ...[]byte) {
	w.lines = append(w.lines, lines...)
	w.counts[k] += len(lines)
	w.oldest[k] = earliest(w.oldest[k], at)
}

// flush writes what is due, in order: the FETCH of new messages (it
// follows the store's EXISTS), then the LIST lines of the mailbox events
// in the order they came, then the STATUS lines (a deleted mailbox has no
// value any more, so none comes after its LIST). atPoll: called from the
// command goroutine at the mailbox's Poll, where the module's FETCH of new
// messages follows the store's EXISTS; the writer goroutine of a NOTIFY
// session that is not in IDLE leaves that FETCH to the next Poll (the
// store's EXISTS goes out only there).
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
	d := s.take(atPoll)
	defer s.putBack(d)
	defer d.releaseGate() // on every way out; after a write only if a panic came first
	if d.resync {
		s.resync(d)
	}
	var w lineSet
	if d.lost {
		w.lines = append(w.lines, []byte(overflowLine))
	}
	s.tellEvents(d, &w)
	s.tellStatus(d, &w)
	// The values are read: the worker may go on, whatever the writes below
	// take (the client may have stopped reading).
	d.releaseGate()
	if d.fetch && d.fetcher != nil {
		// The FETCH of new messages goes first: it follows the store's
		// EXISTS, and the STATUS/LIST lines come after it.
		if items := mapping.MapNewMessages(s.reg.policy, d.view); items != nil && !s.fetchNew(d.fetcher, items, d.fetchAt) {
			return
		}
	}
	if len(w.lines) == 0 && d.alive && d.view.Idling {
		// Nothing else of ours goes out in this flush.
		w.add(kindKeepalive, time.Time{}, []byte(keepaliveLine))
	}
	s.writeLines(&w)
}

// take takes what is due from the session for one flush.
func (s *Session) take(atPoll bool) *due {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &due{
		view:    mapping.SessionView{ID: s.id, Account: s.account, Selected: s.selected, Idling: s.idling, Notify: s.notify},
		fetcher: s.fetcher,
		queue:   s.queue,
		lost:    s.lost,
		alive:   s.keepalive,
	}
	s.queue, s.keepalive = nil, false
	if s.lost {
		// NOTIFICATIONOVERFLOW: the session behaves as after NOTIFY NONE.
		s.notify, s.lost, d.view.Notify = &mapping.Interest{}, false, &mapping.Interest{}
	}
	// Under plain_clients draft, STATUS and LIST wait for IDLE (Map says
	// Defer); so does the resynchronisation of a queue that overflowed.
	d.resync = s.overflow && mapping.TellsNow(s.reg.policy, d.view)
	if len(s.dirty) > 0 {
		d.keys = make([]string, 0, len(s.dirty))
		for key := range s.dirty {
			d.keys = append(d.keys, key)
		}
		sort.Strings(d.keys)
		clear(s.dirty)
		d.dirtyAt, s.dirtyAt = s.dirtyAt, time.Time{}
	}
	d.gate, s.gate = s.gate, nil
	// The FETCH of new messages: now at the Poll and in IDLE; a NOTIFY
	// session's writer outside IDLE leaves it due for the next Poll.
	if s.fetchDue && (atPoll || s.idling) {
		d.fetch, d.fetchAt = true, s.fetchDueAt
		s.fetchDue, s.fetchDueAt = false, time.Time{}
	}
	s.flushing = true
	return d
}

// earliest returns the earlier of two times of changes, a zero time being
// unknown (the other wins).
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// releaseGate releases the session's place in the worker's gate, once.
func (d *due) releaseGate() {
	if d.gate != nil {
		d.gate.release()
		d.gate = nil
	}
}

// putBack returns to the session what the flush d did not tell: what waits
// for IDLE, ahead of what came meanwhile, so that the order is kept.
func (s *Session) putBack(d *due) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushing = false
	if s.gone || s.lost {
		return
	}
	if len(d.deferred) > 0 && !s.overflow {
		s.queue = append(d.deferred, s.queue...)
	}
	if len(d.kept) > 0 {
		if s.dirty == nil {
			s.dirty = map[string]struct{}{}
		}
		for _, key := range d.kept {
			s.dirty[key] = struct{}{}
		}
		s.dirtyAt = earliest(s.dirtyAt, d.dirtyAt)
	}
	s.kickLocked()
}

// resync resynchronises the session by state after its queue overflowed
// (Registry.resync): the LIST lines of what was created or deleted since
// it was last told come first, and every STATUS value the account holds is
// compared with what its client was told. The dropped queue may have held
// nothing of the store's announcements (those are not queued), but the
// FETCH of new messages is tried too.
func (s *Session) resync(d *due) {
	evs, keys := s.reg.resync(s)
	now := time.Now()
	items := make([]item, 0, len(evs)+len(d.queue))
	for _, ev := range evs {
		items = append(items, item{ev: ev, at: now})
	}
	d.queue = append(items, d.queue...)
	for _, key := range keys {
		if _, found := slices.BinarySearch(d.keys, key); !found {
			d.keys = append(d.keys, key)
		}
	}
	sort.Strings(d.keys)
	d.fetch = true
}

// tellEvents maps the queued mailbox events (mapping.Map) and records in
// the session's STATUS view and mailbox set what its client knows after
// each. From the first event that must wait for IDLE on, every event waits,
// so that they are applied in order.
func (s *Session) tellEvents(d *due, w *lineSet) {
	p := s.reg.policy
	shareNames := false
	for i, it := range d.queue {
		view := d.view
		view.Subscribed = it.subscribed
		plan := mapping.Map(p, it.ev, view)
		if plan.Action == mapping.Defer {
			d.deferred = append(d.deferred, d.queue[i:]...)
			break
		}
		if s.view == nil && (it.ev.Kind == event.MailboxRename || it.ev.Kind == event.MailboxCreate) {
			// What the client takes a new or renamed mailbox to hold: its
			// view must say so even before its first STATUS.
			s.view = mapping.NewStatusView(p.StatusItems)
		}
		if s.view != nil {
			mapping.ApplyEvent(p, view, s.view, it.ev)
		}
		if s.applyName(it) {
			shareNames = true
		}
		if plan.Action == mapping.WriteLines {
			w.add(kindLIST, it.at, plan.Lines...)
		}
	}
	if shareNames {
		s.reg.shareNames(s)
	}
}

// tellStatus compares the account's newest STATUS value of each mailbox in
// d.keys with what the client was told, and tells what mapping.MapStatus
// says.
func (s *Session) tellStatus(d *due, w *lineSet) {
	if len(d.keys) == 0 {
		return
	}
	p := s.reg.policy
	for _, ts := range s.reg.statusFor(s, d.keys) {
		if s.view == nil {
			s.view = mapping.NewStatusView(p.StatusItems)
		}
		if s.taken == nil {
			s.taken = map[uint64]uint64{}
		}
		e := ts.entry
		own := e.ownSince(s.id, max(s.taken[e.id], s.baseVersion))
		line, wait := mapping.MapStatus(p, d.view, s.view, mapping.StatusChange{Mailbox: e.mailbox,
			Delimiter: ts.delimiter, Subscribed: ts.subscribed, Value: e.value, Own: own})
		if wait {
			d.kept = append(d.kept, ts.key)
			continue
		}
		s.taken[e.id] = e.version
		if line != nil {
			w.add(kindSTATUS, d.dirtyAt, line)
		}
	}
}

// writeLines writes the flush's lines and counts them.
func (s *Session) writeLines(w *lineSet) {
	if len(w.lines) == 0 {
		return
	}
	if err := s.out.Write(w.lines); err != nil {
		s.reg.Unregister(s)
		return
	}
	s.lastWrite.Store(time.Now().UnixNano())
	now := time.Now()
	for k, n := range w.counts {
		if n == 0 {
			continue
		}
		s.reg.metrics.Pushed(kindNames[k], n)
		if !w.oldest[k].IsZero() {
			s.reg.metrics.Latency(kindNames[k], now.Sub(w.oldest[k]).Seconds())
		}
	}
}
