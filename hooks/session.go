// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"fmt"
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
// mailbox: how many messages the store announced (EXISTS minus EXPUNGE) and
// how many of them the session got a FETCH for. mu serialises the store's
// updates to the client with the module's FETCH lines, so that no EXPUNGE
// can slip between reading a sequence number and writing it.
type selected struct {
	mu       sync.Mutex
	exists   uint32
	fetched  uint32
	inFlight bool     // a FetchNew is between its read and its write
	expunged []uint32 // EXPUNGE sequence numbers sent meanwhile, in order
}

// updateConn is the connection the inner mailbox sends its updates to. It
// forwards every update unchanged, keeps the selected-mailbox counts, and
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
			announced = u.MailboxStatus.Messages > c.sel.exists
			c.sel.exists = u.MailboxStatus.Messages
		}
	case *backend.ExpungeUpdate:
		kind = "EXPUNGE"
		if c.sel.exists > 0 {
			c.sel.exists--
		}
		if u.SeqNum <= c.sel.fetched {
			c.sel.fetched--
		}
		if c.sel.inFlight {
			c.sel.expunged = append(c.sel.expunged, u.SeqNum)
		}
	case *backend.MessageUpdate:
		kind = "FETCH"
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
func (m *Mailbox) FetchNew(items mapping.FetchItems, write func([][]byte) error, giveUp bool) (complete bool, err error) {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()
	sel := m.sel

	sel.mu.Lock()
	from, to := sel.fetched+1, sel.exists
	if from > to {
		sel.mu.Unlock()
		return true, nil
	}
	sel.inFlight, sel.expunged = true, nil
	sel.mu.Unlock()

	msgs, err := m.readMessages(from, to, items)

	sel.mu.Lock()
	defer sel.mu.Unlock()
	expunged := sel.expunged
	sel.inFlight, sel.expunged = false, nil
	if err != nil {
		return false, fmt.Errorf("hooks: fetch new messages: %w", err)
	}
	if len(expunged) > 0 {
		// An EXPUNGE went out while the messages were read. go-imap-sql
		// resolves from:to and numbers the messages it read by the
		// handle's sequence map at two moments of its own; whether the
		// EXPUNGE came before either is unknown, so the sequence numbers
		// read cannot be trusted. Read again.
		if giveUp {
			sel.fetched = sel.exists
			return true, nil
		}
		return false, nil
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].SeqNum < msgs[j].SeqNum })
	var lines [][]byte
	next := sel.fetched + 1
	for _, msg := range msgs {
		if msg.SeqNum < next {
			continue
		}
		if msg.SeqNum != next {
			break // not committed yet: keep the order, retry
		}
		lines = append(lines, mapping.FetchLine(msg.SeqNum, mapping.FetchDataOf(msg), items))
		next++
	}
	if len(lines) > 0 {
		if err := write(lines); err != nil {
			return false, err
		}
		sel.fetched = next - 1
	}
	if sel.fetched < sel.exists && giveUp {
		sel.fetched = sel.exists
	}
	return sel.fetched >= sel.exists, nil
}

// readMessages lists messages from:to (sequence numbers) of the inner
// mailbox with UID and items.
func (m *Mailbox) readMessages(from, to uint32, items mapping.FetchItems) (msgs []*imap.Message, err error) {
	var seq imap.SeqSet
	seq.AddRange(from, to)
	ch := make(chan *imap.Message, 16)
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("hooks: panic in ListMessages: %v\n%s", p, debug.Stack())
			}
		}()
		done <- m.inner.ListMessages(false, &seq, items.Request(), ch)
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
