// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"fmt"
	"math"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"

	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

// serverConn is what go-imap's server hands to GetMailbox: a backend.Conn
// that also has the session's Context.
type serverConn interface {
	backend.Conn
	Context() *server.Context
}

// selected is what the module knows of a session's view of its selected
// mailbox: the numbering the session was given, as far as the module needs
// it to number new messages. The messages 1..head are the ones the session
// had at SELECT and the ones it got the module's FETCH for (or that the
// module gave up on); floor is a UID at least as high as any of theirs.
// tail holds the messages announced after them (EXISTS), head+1 onwards:
// for each the UID the store's FETCH told the session, 0 while it was told
// none. mu serialises the store's updates to the client with the module's
// FETCH lines, so that no update can slip between choosing a line's
// sequence number and writing it.
type selected struct {
	mu       sync.Mutex
	head     uint32
	floor    uint32
	tail     []uint32
	blind    bool   // the SELECT gave no UIDNEXT: no floor, no FETCH lines
	expunges uint64 // EXPUNGEs sent to the session, for FetchNew to see one during its read
}

// exists is the session's message count (its last EXISTS minus the
// EXPUNGEs since).
func (s *selected) exists() uint32 { return s.head + uint32(len(s.tail)) }

// selectedAt starts the view of a session that has just selected a
// mailbox with status: its messages all have UIDs below UIDNEXT. Without
// UIDNEXT the module cannot number new messages and sends no FETCH.
func (s *selected) selectedAt(status *imap.MailboxStatus) {
	if status != nil && status.UidNext > 0 {
		s.head, s.floor, s.blind = status.Messages, status.UidNext-1, false
	}
}

// exist records `* n EXISTS` and reports whether it announced messages.
func (s *selected) exist(n uint32) bool {
	cur := s.exists()
	switch {
	case n > cur:
		s.tail = append(s.tail, make([]uint32, n-cur)...)
		return true
	case n < uint32(len(s.tail))+s.head && n >= s.head:
		s.tail = s.tail[:n-s.head]
	case n < s.head:
		s.head, s.tail = n, s.tail[:0]
	}
	return false
}

// expunge records `* seq EXPUNGE`.
func (s *selected) expunge(seq uint32) {
	s.expunges++
	switch {
	case seq == 0:
	case seq <= s.head:
		s.head--
	case seq-s.head <= uint32(len(s.tail)):
		i := seq - s.head - 1
		s.tail = append(s.tail[:i], s.tail[i+1:]...)
	}
}

// told records a FETCH line that gave message seq the UID uid: the
// session takes what it was told last, so another message that had that
// UID has none now.
func (s *selected) told(seq, uid uint32) {
	if seq == 0 || uid == 0 || seq > s.exists() {
		return
	}
	for i, u := range s.tail {
		if u == uid {
			s.tail[i] = 0
		}
	}
	if seq <= s.head {
		s.floor = max(s.floor, uid)
	} else {
		s.tail[seq-s.head-1] = uid
	}
}

// ceilings returns, for each message of tail, the lowest UID the session
// was told for a message after it (0: none): its own UID must be below.
func ceilings(tail []uint32) []uint32 {
	out := make([]uint32, len(tail))
	c := uint32(0)
	for i := len(tail) - 1; i >= 0; i-- {
		out[i] = c
		if u := tail[i]; u != 0 && (c == 0 || u < c) {
			c = u
		}
	}
	return out
}

// updateConn is the connection the inner mailbox sends its updates to. It
// forwards every update unchanged, keeps the session's numbering (sel), and
// notes when the store announced new messages (EXISTS), so that the session
// can send their FETCH afterwards. SendUpdate runs with the store's handle
// lock held (go-imap-mess): it must not call back into the mailbox.
type updateConn struct {
	backend.Conn
	session *registry.Session
	sel     *selected
	guard   *stallGuard
}

func (c *updateConn) SendUpdate(upd backend.Update) error {
	c.sel.mu.Lock()
	// The store holds its handle lock (and may be inside a transaction)
	// while it writes: a client that does not read must not keep it.
	stalled := time.AfterFunc(c.guard.timeout, c.guard.kick)
	err := c.Conn.SendUpdate(upd)
	stalled.Stop()
	kind, announced := "", false
	switch u := upd.(type) {
	case *backend.MailboxUpdate:
		if u.MailboxStatus == nil {
			break
		}
		if _, ok := u.MailboxStatus.Items[imap.StatusMessages]; ok {
			kind = "EXISTS"
			announced = c.sel.exist(u.MailboxStatus.Messages)
		}
	case *backend.ExpungeUpdate:
		kind = "EXPUNGE"
		c.sel.expunge(u.SeqNum)
	case *backend.MessageUpdate:
		kind = "FETCH"
		if u.Message != nil {
			c.sel.told(u.Message.SeqNum, u.Message.Uid)
		}
	}
	c.sel.mu.Unlock()
	if kind != "" && err == nil {
		c.session.StoreUpdate(kind)
	}
	if announced {
		c.session.NewMessages()
	}
	return err
}

// rawResponse is a complete untagged response (or several), written as is.
type rawResponse []byte

func (r rawResponse) WriteTo(w *imap.Writer) error {
	_, err := w.Write(r)
	return err
}

// connOut writes a session's notifications through go-imap's response
// channel, which the connection's writer drains between responses, so a
// notification never lands inside another response. It gives up when the
// client is gone or the module stops, instead of blocking forever.
type connOut struct {
	responses chan<- imap.WriterTo
	loggedOut <-chan struct{}
	stop      <-chan struct{}

	// handing is held by Write while it hands a response over; hold takes
	// it to wait for that. held, when not nil, is closed once the hold is
	// released: Write waits for that before it hands anything over.
	handing sync.Mutex
	holdMu  sync.Mutex
	held    chan struct{}
}

// holdLimit bounds a hold (HoldPushes) whose release never comes, as when
// go-imap does not call the COMPRESS upgrade after a failed write of its
// OK: the session's lines then flow again.
const holdLimit = 10 * time.Second

// hold keeps Write from handing anything over until release is called,
// and returns once a Write that is handing a response over is done.
func (o *connOut) hold() (release func()) {
	ch := make(chan struct{})
	o.holdMu.Lock()
	o.held = ch
	o.holdMu.Unlock()
	o.handing.Lock()
	o.handing.Unlock() // the write under way is done
	var once sync.Once
	release = func() {
		once.Do(func() {
			o.holdMu.Lock()
			if o.held == ch {
				o.held = nil
			}
			o.holdMu.Unlock()
			close(ch)
		})
	}
	time.AfterFunc(holdLimit, release)
	return release
}

// heldBy returns the channel of the hold in force, nil when none.
func (o *connOut) heldBy() chan struct{} {
	o.holdMu.Lock()
	defer o.holdMu.Unlock()
	return o.held
}

func newConnOut(ctx *server.Context, stop <-chan struct{}) *connOut {
	return &connOut{responses: ctx.Responses, loggedOut: ctx.LoggedOut, stop: stop}
}

// DefaultStallTimeout is how long, unless the module's stall_timeout
// directive says otherwise, a client's connection may leave one of the
// store's updates unwritten (its socket full: the client does not read)
// before the module disconnects the client. go-imap-mess writes the
// selected mailbox's updates while it holds the session's handle lock,
// which every APPEND, COPY, MOVE, STORE and delivery into that mailbox
// needs; go-imap-sql takes it inside its SQL transaction, and maddy's
// shutdown waits for them. The module's own lines only ever block the
// session's own goroutine (its queue overflows; it is resynchronised when
// it reads again), so they need no such bound.
const DefaultStallTimeout = 2 * time.Second

// stallGuard disconnects the client of one connection once it has
// stalled.
type stallGuard struct {
	conn    backend.Conn
	timeout time.Duration
	once    sync.Once
}

// deadliner is the part of go-imap's server connection (it embeds the
// net.Conn) that ends blocked I/O.
type deadliner interface{ SetDeadline(time.Time) error }

// kick makes every blocked read and write of the connection fail now: the
// connection's writer returns (and with it whoever waits for it, the
// store's SendUpdate included), and go-imap ends the connection as after
// any I/O error. It may be called from any goroutine, more than once.
func (g *stallGuard) kick() {
	if g == nil {
		return
	}
	g.once.Do(func() {
		if d, ok := g.conn.(deadliner); ok {
			d.SetDeadline(time.Unix(1, 0))
		}
	})
}

func (o *connOut) Write(lines [][]byte) error {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	buf := make([]byte, 0, n)
	for _, l := range lines {
		buf = append(buf, l...)
	}
	for {
		if h := o.heldBy(); h != nil {
			select {
			case <-h:
				continue
			case <-o.loggedOut:
				return registry.ErrClosed
			case <-o.stop:
				return registry.ErrClosed
			}
		}
		o.handing.Lock()
		if o.heldBy() != nil { // a hold began meanwhile
			o.handing.Unlock()
			continue
		}
		var err error
		select {
		case o.responses <- rawResponse(buf):
		case <-o.loggedOut:
			err = registry.ErrClosed
		case <-o.stop:
			err = registry.ErrClosed
		}
		o.handing.Unlock()
		return err
	}
}

func (o *connOut) LoggedOut() <-chan struct{} { return o.loggedOut }

// FetchNew writes, through write, a FETCH line for each message of the
// selected mailbox the store announced and the session has not had one for
// (registry.Fetcher). It reports complete=false when some announced message
// cannot be read yet: go-imap-sql announces a new message before its
// transaction commits, so the caller retries shortly. With giveUp set the
// unreadable messages are skipped (an APPEND whose transaction failed after
// the announcement).
//
// The lines never contradict the numbering the session was given: the
// messages are read by UID (above every UID the session may have before
// them), and a message gets the number n only when that agrees with the
// store's own number for it, with every UID the session was told (the
// store's FETCH lines and the module's), with UIDs rising with the numbers,
// and with the session's message count. go-imap-sql numbers messages by the
// handle's UID map, which under concurrent writers need not be sorted and
// may lack messages the database already has (see docs/guarantees.md); a
// message it numbers against what the session was told waits, and is
// skipped at giveUp.
func (m *Mailbox) FetchNew(items mapping.FetchItems, write func([][]byte) error, giveUp bool) (complete bool, err error) {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()
	sel := m.sel

	for reads := 0; ; reads++ {
		sel.mu.Lock()
		if len(sel.tail) == 0 || sel.blind || sel.floor == math.MaxUint32 {
			sel.head, sel.tail = sel.exists(), sel.tail[:0]
			sel.mu.Unlock()
			return true, nil
		}
		floor, expunges := sel.floor, sel.expunges
		sel.mu.Unlock()

		msgs, err := m.readAbove(floor, items)

		sel.mu.Lock()
		if err != nil {
			sel.mu.Unlock()
			return false, fmt.Errorf("hooks: fetch new messages: %w", err)
		}
		if sel.expunges != expunges {
			// The store's numbers of what was read may be from before an
			// EXPUNGE the session has got since: read again.
			sel.mu.Unlock()
			if reads < maxRereads {
				continue
			}
			return false, nil
		}
		complete, err = sel.number(msgs, items, write, giveUp)
		sel.mu.Unlock()
		return complete, err
	}
}

// maxRereads bounds how often one FetchNew reads again because an EXPUNGE
// went out during its read; the caller retries later.
const maxRereads = 3

// number writes the FETCH lines of the messages of tail it can number from
// msgs (read by UID, numbered by the store), first to last, and moves them
// to head. It stops at the first message it cannot number yet, or, with
// giveUp, skips it and reports complete=false (the caller logs it). s.mu
// is held.
func (s *selected) number(msgs []*imap.Message, items mapping.FetchItems, write func([][]byte) error, giveUp bool) (complete bool, err error) {
	// The store's UID for each number: several messages get the same
	// number when the handle's map lacks some of them (go-imap-mess then
	// numbers a UID as the next one above it that it has), so the highest
	// of them is the one the map has there.
	byNum := make(map[uint32]*imap.Message, len(msgs))
	for _, msg := range msgs {
		if cur := byNum[msg.SeqNum]; cur == nil || msg.Uid > cur.Uid {
			byNum[msg.SeqNum] = msg
		}
	}
	var lines [][]byte
	head, floor, tail := s.head, s.floor, s.tail
	ceils := ceilings(tail)
	skipped := false
	for len(tail) > 0 {
		n, told, ceiling := head+1, tail[0], ceils[0]
		msg := byNum[n]
		fits := msg != nil && msg.Uid > floor &&
			(ceiling == 0 || msg.Uid < ceiling) &&
			(told == 0 || msg.Uid == told)
		switch {
		case fits:
			lines = append(lines, mapping.FetchLine(n, mapping.FetchDataOf(msg), items))
			floor = msg.Uid
		case giveUp:
			floor, skipped = max(floor, told), true
		default:
			return s.commit(lines, head, floor, tail, write, false)
		}
		head, tail, ceils = head+1, tail[1:], ceils[1:]
	}
	return s.commit(lines, head, floor, tail, write, !skipped)
}

// commit writes lines and, when that succeeds, makes head, floor and tail
// the session's view.
func (s *selected) commit(lines [][]byte, head, floor uint32, tail []uint32, write func([][]byte) error, complete bool) (bool, error) {
	if len(lines) > 0 {
		if err := write(lines); err != nil {
			return false, err
		}
	}
	s.head, s.floor, s.tail = head, floor, tail
	return complete, nil
}

// readAbove lists the messages of the inner mailbox with a UID above floor,
// with UID and items.
func (m *Mailbox) readAbove(floor uint32, items mapping.FetchItems) (msgs []*imap.Message, err error) {
	var uids imap.SeqSet
	uids.AddRange(floor+1, math.MaxUint32)
	ch := make(chan *imap.Message, 16)
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("hooks: panic in ListMessages: %v\n%s", p, debug.Stack())
			}
		}()
		done <- m.inner.ListMessages(true, &uids, items.Request(), ch)
	}()
	for msg := range ch {
		msgs = append(msgs, msg)
	}
	return msgs, <-done
}

// listAll returns the user's mailboxes by key, each subscribed one with
// \Subscribed among its attributes (registry.ListMailboxes): the store
// subscribes a mailbox it creates, and the events say so.
func (u *User) listAll() (map[string]imap.MailboxInfo, error) {
	infos, err := registry.ListMailboxes(u.inner)
	if err != nil {
		return nil, err
	}
	out := make(map[string]imap.MailboxInfo, len(infos))
	for _, info := range infos {
		out[mapping.MailboxKey(info.Name)] = info
	}
	return out, nil
}

// sortedInfos returns the mailboxes in name order, so that parents come
// before their children in the events.
func sortedInfos(m map[string]imap.MailboxInfo) []imap.MailboxInfo {
	out := make([]imap.MailboxInfo, 0, len(m))
	for _, info := range m {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// childSuffix reports whether name is from or one of its descendants, and
// the part of name after from.
func childSuffix(name, from, delim string) (string, bool) {
	if mapping.MailboxKey(name) == mapping.MailboxKey(from) {
		return "", true
	}
	if delim != "" && len(name) > len(from)+len(delim) && name[:len(from)+len(delim)] == from+delim {
		return name[len(from):], true
	}
	return "", false
}
