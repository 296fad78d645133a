// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

// Fault tests of the decorators with the registry behind them and a real
// go-imap-sql store on SQLite: what a session is told when the store fails
// or panics under the module, when its connection goes away in the middle
// of a push, and that closing the registry ends every goroutine the
// decorators and the registry started. Sessions are registered the way
// go-imap's server does it, with a connection whose Context has the
// Responses and LoggedOut channels (fakeConn).

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"
	imapsql "github.com/foxcpp/go-imap-sql"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

const (
	waitTimeout = 15 * time.Second
	quiet       = 300 * time.Millisecond
	acct        = "alice"
)

// faults makes the store fail under the module on demand.
type faults struct {
	statusErr   atomic.Bool // Status fails
	listPanics  atomic.Bool // ListMessages of a decorated session's mailbox panics
	statusCalls atomic.Int64
}

var errStoreDown = errors.New("test: the database is unreachable")

// faultyUser is the store's user with Status and its mailboxes' ListMessages
// failing on demand.
type faultyUser struct {
	backend.User
	f *faults
}

func (u *faultyUser) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	u.f.statusCalls.Add(1)
	if u.f.statusErr.Load() {
		return nil, errStoreDown
	}
	return u.User.Status(mbox, items)
}

func (u *faultyUser) GetMailbox(name string, readOnly bool, conn backend.Conn) (*imap.MailboxStatus, backend.Mailbox, error) {
	st, m, err := u.User.GetMailbox(name, readOnly, conn)
	if err != nil {
		return st, m, err
	}
	return st, &faultyMailbox{Mailbox: m, f: u.f}, nil
}

type faultyMailbox struct {
	backend.Mailbox
	f *faults
}

func (m *faultyMailbox) ListMessages(uid bool, seqset *imap.SeqSet, items []imap.FetchItem, ch chan<- *imap.Message) error {
	if m.f.listPanics.Load() {
		close(ch)
		panic("test: ListMessages panics")
	}
	return m.Mailbox.ListMessages(uid, seqset, items, ch)
}

// fakeConn is go-imap's server connection as the decorators see it: the
// store's updates come through SendUpdate, the module's lines through
// Context().Responses, which a client goroutine drains unless the test
// stops it (a client that does not read). Everything written is kept as
// lines.
type fakeConn struct {
	ctx       *server.Context
	responses chan imap.WriterTo
	loggedOut chan struct{}
	reading   chan bool // false: stop draining Responses; true: drain again

	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newFakeConn(t *testing.T) *fakeConn {
	c := &fakeConn{
		responses: make(chan imap.WriterTo),
		loggedOut: make(chan struct{}),
		reading:   make(chan bool),
		done:      make(chan struct{}),
	}
	c.ctx = &server.Context{State: imap.SelectedState, Responses: c.responses, LoggedOut: c.loggedOut}
	go c.drain()
	t.Cleanup(c.logout)
	return c
}

func (c *fakeConn) drain() {
	defer close(c.done)
	reading := true
	for {
		var in chan imap.WriterTo
		if reading {
			in = c.responses
		}
		select {
		case r := <-in:
			c.record(r)
		case reading = <-c.reading:
		case <-c.loggedOut:
			return
		}
	}
}

func (c *fakeConn) record(r imap.WriterTo) {
	var buf bytes.Buffer
	w := imap.NewWriter(&buf)
	if err := r.WriteTo(w); err != nil {
		panic(err)
	}
	w.Flush()
	c.mu.Lock()
	for _, l := range strings.SplitAfter(buf.String(), "\r\n") {
		if l != "" {
			c.lines = append(c.lines, strings.TrimSuffix(l, "\r\n"))
		}
	}
	c.mu.Unlock()
}

// SendUpdate writes the store's update as go-imap's server does.
func (c *fakeConn) SendUpdate(upd backend.Update) error {
	var line string
	switch u := upd.(type) {
	case *backend.MailboxUpdate:
		for item := range u.MailboxStatus.Items {
			switch item {
			case imap.StatusMessages:
				line = fmt.Sprintf("* %d EXISTS", u.MailboxStatus.Messages)
			case imap.StatusRecent:
				line = fmt.Sprintf("* %d RECENT", u.MailboxStatus.Recent)
			}
		}
	case *backend.ExpungeUpdate:
		line = fmt.Sprintf("* %d EXPUNGE", u.SeqNum)
	case *backend.MessageUpdate:
		line = fmt.Sprintf("* %d FETCH (FLAGS %v)", u.Message.SeqNum, u.Message.Flags)
		if u.Message.Uid != 0 {
			line = fmt.Sprintf("* %d FETCH (FLAGS %v UID %d)", u.Message.SeqNum, u.Message.Flags, u.Message.Uid)
		}
	}
	select {
	case <-c.loggedOut:
		return errors.New("test: logged out")
	default:
	}
	if line != "" {
		c.mu.Lock()
		c.lines = append(c.lines, line)
		c.mu.Unlock()
	}
	return nil
}

func (c *fakeConn) Context() *server.Context { return c.ctx }

// setReading makes the client stop (false) or resume (true) reading.
func (c *fakeConn) setReading(on bool) {
	select {
	case c.reading <- on:
	case <-c.done:
	}
}

func (c *fakeConn) logout() {
	select {
	case <-c.loggedOut:
	default:
		close(c.loggedOut)
	}
	<-c.done
}

func (c *fakeConn) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.lines
	c.lines = nil
	return l
}

func (c *fakeConn) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// world is a store, a registry over it and the decorators' users.
type world struct {
	t      *testing.T
	dir    string // the store's folder
	be     *imapsql.Backend
	f      *faults
	reg    *registry.Registry
	logs   *testkit.LogCapture
	lastID uint64
}

func newWorld(t *testing.T) *world {
	dir := t.TempDir()
	w := &world{t: t, dir: dir, be: testkit.SQLiteStoreAt(t, dir, acct), f: &faults{}}
	logger, logs := testkit.NewLog()
	w.logs = logs
	w.reg = registry.New(mapping.AnyTimePolicy(), func(a string) (backend.User, error) {
		u, err := w.be.GetUser(a)
		if err != nil {
			return nil, err
		}
		return &faultyUser{User: u, f: w.f}, nil
	}, logger)
	t.Cleanup(w.reg.Close)
	return w
}

// login returns a decorated login of acct, as the module's Store does.
func (w *world) login() *User {
	w.t.Helper()
	u, err := w.be.GetUser(acct)
	if err != nil {
		w.t.Fatal(err)
	}
	w.lastID++
	du := WrapUser(&faultyUser{User: u, f: w.f}, w.reg, w.reg, w.lastID, 0)
	w.t.Cleanup(func() { du.Logout() })
	return du
}

// idler logs in, selects mailbox through a fakeConn and IDLEs (until the
// test ends).
func (w *world) idler(mailbox string) (*fakeConn, *Mailbox) {
	w.t.Helper()
	u := w.login()
	c := newFakeConn(w.t)
	_, m, err := u.GetMailbox(mailbox, false, c)
	if err != nil {
		w.t.Fatal(err)
	}
	done := make(chan struct{})
	idled := make(chan struct{})
	go func() {
		defer close(idled)
		m.Idle(done)
	}()
	w.t.Cleanup(func() {
		done <- struct{}{}
		<-idled
		m.Close()
	})
	waitFor(w.t, "the session to idle", func() bool { return w.reg.Sessions() > 0 })
	return c, m.(*Mailbox)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func appendTo(t *testing.T, u *User, mbox string) {
	t.Helper()
	msg := "Subject: test\r\n\r\nbody\r\n"
	if err := testkit.RetryLocked(5, func() error {
		return u.CreateMessage(mbox, nil, time.Now(), bytes.NewBufferString(msg), nil)
	}); err != nil {
		t.Fatal(err)
	}
}

// expect waits for the lines and fails unless they are exactly want, then
// checks that nothing else comes for quiet.
func expect(t *testing.T, c *fakeConn, want ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d lines", len(want)), func() bool { return c.len() >= len(want) })
	time.Sleep(quiet)
	got := c.take()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A failing STATUS query is logged, and the session is told nothing: no
// STATUS with zeros or stale values. Once the store answers again, the
// next change gives the session the store's exact values.
func TestStatusQueryFails(t *testing.T) {
	w := newWorld(t)
	actor := w.login()
	if err := actor.CreateMailbox("Archive"); err != nil {
		t.Fatal(err)
	}
	c, _ := w.idler("INBOX")
	appendTo(t, actor, "Archive")
	expect(t, c, `* STATUS "Archive" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)`)

	w.f.statusErr.Store(true)
	calls := w.f.statusCalls.Load()
	appendTo(t, actor, "Archive")
	waitFor(t, "the failed STATUS query to be logged", func() bool {
		return w.logs.Count("STATUS query failed") == 1
	})
	if w.f.statusCalls.Load() == calls {
		t.Fatal("no STATUS query was made")
	}
	if !strings.Contains(w.logs.String(), errStoreDown.Error()) {
		t.Errorf("the log does not say why:\n%s", w.logs)
	}
	expect(t, c) // nothing

	w.f.statusErr.Store(false)
	appendTo(t, actor, "Archive")
	expect(t, c, `* STATUS "Archive" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)`)
}

// A panic in the store under the session's FETCH of new messages (its
// goroutine calls ListMessages) is recovered and logged with its stack;
// the session keeps getting the store's lines and, once the store works
// again, the FETCH of the messages it has not had one for, in order.
func TestPanicWhileFetchingNewMessages(t *testing.T) {
	w := newWorld(t)
	actor := w.login()
	c, _ := w.idler("INBOX")
	// Message 1 while the store works: its lines show that the store's
	// IDLE and the module's FETCH both run.
	appendTo(t, actor, "INBOX")
	waitFor(t, "EXISTS, RECENT and FETCH of message 1", func() bool { return c.len() >= 3 })
	c.take()

	w.f.listPanics.Store(true)
	appendTo(t, actor, "INBOX")
	waitFor(t, "the panic to be logged", func() bool { return w.logs.Count("panic in ListMessages") > 0 })
	if w.logs.Count(".go:") == 0 {
		t.Errorf("the panic was logged without its stack:\n%s", w.logs)
	}
	waitFor(t, "the store's EXISTS", func() bool { return c.len() >= 2 })
	w.f.listPanics.Store(false)
	time.Sleep(quiet)
	before := c.take()
	if len(before) < 2 || before[0] != "* 2 EXISTS" || before[1] != "* 2 RECENT" {
		t.Fatalf("while the store panicked: %q, want * 2 EXISTS, * 2 RECENT first", before)
	}

	appendTo(t, actor, "INBOX")
	waitFor(t, "EXISTS, RECENT and FETCH of message 3", func() bool { return c.len() >= 3 })
	time.Sleep(quiet)
	got := append(before[2:], c.take()...)
	// Message 2's FETCH, which failed while the store panicked, may come
	// late (a retry, or with message 3's): each FETCH once, in order, and
	// message 3's after the store's * 3 EXISTS.
	var fetches []string
	var rest []string
	for _, l := range got {
		if strings.Contains(l, " FETCH (UID ") {
			fetches = append(fetches, l)
		} else {
			rest = append(rest, l)
		}
	}
	if strings.Join(rest, "|") != "* 3 EXISTS|* 3 RECENT" {
		t.Fatalf("after the store recovered: %q, want * 3 EXISTS and * 3 RECENT besides the FETCH lines", got)
	}
	first := 4 - len(fetches)
	for i, l := range fetches {
		if first < 2 || !strings.HasPrefix(l, fmt.Sprintf("* %d FETCH (UID %d ", first+i, first+i)) {
			t.Fatalf("after the store recovered: FETCH lines %q, want one per unfetched message up to 3, in order", fetches)
		}
	}
}

// A session whose client goes away while the module is pushing to it (its
// Write blocks because the client stopped reading, then the connection is
// logged out) is removed from the registry, and its writer goroutine ends.
func TestLoggedOutDuringPush(t *testing.T) {
	w := newWorld(t)
	actor := w.login()
	before := moduleGoroutines()
	c, _ := w.idler("INBOX")
	other, _ := w.idler("INBOX")
	if n := w.reg.Sessions(); n != 2 {
		t.Fatalf("%d sessions", n)
	}
	c.setReading(false)
	for i := 0; i < 20; i++ {
		if err := actor.CreateMailbox(fmt.Sprintf("Box%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the other session's LIST lines", func() bool { return other.len() == 20 })
	c.logout() // the client is gone while a Write is blocked
	waitFor(t, "the session to be removed", func() bool { return w.reg.Sessions() == 1 })
	waitFor(t, "its writer goroutine to end", func() bool { return moduleGoroutines() <= before+1 })
}

// Closing the registry (maddy's shutdown closes the module) ends every
// goroutine the registry and the decorators started, also those of
// sessions whose clients do not read and of accounts whose STATUS query
// is failing.
func TestCloseEndsEveryGoroutine(t *testing.T) {
	before := moduleGoroutines()
	w := newWorld(t)
	actor := w.login()
	if err := actor.CreateMailbox("Archive"); err != nil {
		t.Fatal(err)
	}
	stuck, _ := w.idler("INBOX")
	stuck.setReading(false)
	w.idler("INBOX")
	w.idler("Archive")
	for i := 0; i < 5; i++ {
		if err := actor.CreateMailbox(fmt.Sprintf("Box%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	w.f.statusErr.Store(true)
	appendTo(t, actor, "Archive")
	appendTo(t, actor, "INBOX")
	if n := moduleGoroutines(); n <= before {
		t.Fatalf("%d module goroutines with 3 sessions (%d before)", n, before)
	}
	w.reg.Close()
	waitFor(t, "every goroutine of the registry and the decorators to end", func() bool {
		return moduleGoroutines() == before
	})
}

// moduleGoroutines counts the goroutines running code of this module's
// registry or hooks packages (a goroutine leak check by stack).
func moduleGoroutines() int {
	return testkit.Goroutines("maddy-notify/registry.", "maddy-notify/hooks.(*Mailbox).readAbove")
}

// stalledConn is a fakeConn whose client has stopped reading: every
// update the store sends blocks, as a write to a full socket does, until
// the connection's deadline is set (which is how the stall guard ends it).
type stalledConn struct {
	*fakeConn
	writing   chan struct{} // closed when the store's first write began
	kicked    chan struct{} // closed when SetDeadline was called
	writeOnce sync.Once
	kickOnce  sync.Once
}

func (c *stalledConn) SendUpdate(upd backend.Update) error {
	c.writeOnce.Do(func() { close(c.writing) })
	<-c.kicked
	return errors.New("test: write to a connection past its deadline")
}

func (c *stalledConn) SetDeadline(time.Time) error {
	c.kickOnce.Do(func() { close(c.kicked) })
	return nil
}

// TestStallGuard: a session whose client does not read holds the store's
// write of an update, and with it the mailbox's lock, which the next
// APPEND into the mailbox needs, for the stall timeout given to WrapUser;
// then the module ends the connection, and the APPEND completes.
func TestStallGuard(t *testing.T) {
	const stall = 300 * time.Millisecond
	w := newWorld(t)
	u, err := w.be.GetUser(acct)
	if err != nil {
		t.Fatal(err)
	}
	w.lastID++
	du := WrapUser(u, w.reg, w.reg, w.lastID, stall)
	t.Cleanup(func() { du.Logout() })
	c := &stalledConn{fakeConn: newFakeConn(t), writing: make(chan struct{}), kicked: make(chan struct{})}
	_, m, err := du.GetMailbox("INBOX", false, c)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	idled := make(chan struct{})
	go func() {
		defer close(idled)
		m.Idle(done)
	}()
	t.Cleanup(func() {
		close(done)
		<-idled
		m.Close()
	})
	waitFor(t, "the session to idle", func() bool { return w.reg.Sessions() > 0 })

	// The first APPEND makes the store write EXISTS to the idling session
	// (from its IDLE goroutine), which blocks; the second needs the lock
	// that write holds. An APPEND before go-imap-mess's Idle began to wait
	// for notifications is only written at the next one (the session is
	// registered before it idles): append until the write begins.
	actor := w.login()
	wrote := false
	for i := 0; i < 20 && !wrote; i++ {
		appendTo(t, actor, "INBOX")
		select {
		case <-c.writing:
			wrote = true
		case <-time.After(waitTimeout / 20):
		}
	}
	if !wrote {
		t.Fatal("the store never wrote the new message's EXISTS to the idling session")
	}
	blocked := time.Now()
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		appendTo(t, actor, "INBOX")
	}()
	select {
	case <-appended:
	case <-time.After(waitTimeout):
		t.Fatalf("APPEND into the mailbox of a stalled client still blocked after %v (stall timeout %v)", waitTimeout, stall)
	}
	took := time.Since(blocked)
	select {
	case <-c.kicked:
	default:
		t.Fatalf("the second APPEND completed after %v while the store's write to the stalled client was still blocked: it did not need the lock?", took)
	}
	// The write began a little before blocked was taken: half the timeout
	// is the bound that cannot fail by scheduling.
	if took < stall/2 {
		t.Fatalf("the stalled connection was ended %v after the store's write began, well before the stall timeout %v", took, stall)
	}
	t.Logf("the second APPEND waited %v for the stalled client (stall timeout %v)", took.Round(time.Millisecond), stall)
}
