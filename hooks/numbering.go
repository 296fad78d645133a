// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"fmt"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

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
