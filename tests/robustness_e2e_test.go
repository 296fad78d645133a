// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// Robustness end-to-end tests: what an operator with thousands of clients,
// some broken or hostile, can rely on. Each test starts its own maddy and
// attacks it from outside the way a bad client would (a socket that stops
// reading, another account's sessions, odd names and flags, connections
// cut in the middle of a push, SIGTERM with all of that going on), and
// fails when a property of docs/guarantees.md breaks.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// stalledClient is a raw IMAP client whose socket has a tiny receive buffer
// (set before connect, so the window it advertises is small from the SYN
// on). After Idle it reads nothing until Resume: the server's writes to it
// fill its TCP window and then the server's send buffer, as with a client
// on a dead link or one that is hostile.
type stalledClient struct {
	conn net.Conn
	r    *bufio.Reader
	tag  int
	idle string // tag of the running IDLE
}

// stalledRcvBuf is the receive buffer of a stalledClient (the kernel
// doubles it and applies its minimum).
const stalledRcvBuf = 1024

// dialStalled connects with SO_RCVBUF set to stalledRcvBuf, logs in as name
// and selects mailbox (wire form). The connection is closed when the test
// ends.
func dialStalled(t *testing.T, addr, name, mailbox string) *stalledClient {
	t.Helper()
	return dialStalledClosing(t, addr, name, mailbox, t.Cleanup)
}

// dialStalledClosing is dialStalled that hands the connection's close to
// closeLater instead of t.Cleanup (to keep it open while maddy shuts
// down).
func dialStalledClosing(t *testing.T, addr, name, mailbox string, closeLater func(func())) *stalledClient {
	t.Helper()
	d := net.Dialer{Timeout: expectWait, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stalledRcvBuf)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s with a small receive buffer: %v", addr, err)
	}
	closeLater(func() { conn.Close() })
	s := &stalledClient{conn: conn, r: bufio.NewReader(conn)}
	if g, err := s.readLine(expectWait); err != nil || !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting: %q %v", g, err)
	}
	if _, tagged := s.cmd(t, "LOGIN "+testkit.Quote(name)+" "+testkit.Quote(pass)); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("LOGIN %s: %s", name, tagged)
	}
	if _, tagged := s.cmd(t, "SELECT "+mailbox); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("SELECT %s: %s", mailbox, tagged)
	}
	return s
}

func (s *stalledClient) readLine(timeout time.Duration) (string, error) {
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := s.r.ReadString('\n')
	return strings.TrimSuffix(line, "\r\n"), err
}

// cmd sends a command and reads its response (names in this file never
// need literals).
func (s *stalledClient) cmd(t *testing.T, cmd string) (untagged []string, tagged string) {
	t.Helper()
	s.tag++
	tag := fmt.Sprintf("S%d", s.tag)
	s.send(t, tag+" "+cmd)
	for {
		line, err := s.readLine(expectWait)
		if err != nil {
			t.Fatalf("%s %s: %v (untagged so far: %q)", tag, cmd, err, untagged)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, line)
	}
}

func (s *stalledClient) send(t *testing.T, line string) {
	t.Helper()
	s.conn.SetWriteDeadline(time.Now().Add(expectWait))
	if _, err := s.conn.Write([]byte(line + "\r\n")); err != nil {
		t.Fatalf("send %q: %v", line, err)
	}
}

// stall starts IDLE, waits for the continuation request and from then on
// reads nothing.
func (s *stalledClient) stall(t *testing.T) {
	t.Helper()
	s.tag++
	s.idle = fmt.Sprintf("S%d", s.tag)
	s.send(t, s.idle+" IDLE")
	for {
		line, err := s.readLine(expectWait)
		if err != nil {
			t.Fatalf("IDLE: %v", err)
		}
		if strings.HasPrefix(line, "+") {
			return
		}
		if strings.HasPrefix(line, s.idle+" ") {
			t.Fatalf("IDLE rejected: %s", line)
		}
	}
}

// resume reads again: everything that piled up, until the server has been
// quiet for quiet (at most limit), then ends IDLE and returns every
// untagged line it read. gone reports that the server closed the
// connection instead (lines then holds what came before).
func (s *stalledClient) resume(t *testing.T, quiet, limit time.Duration) (lines []string, gone bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		line, err := s.readLine(quiet)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return lines, true
		}
		lines = append(lines, line)
	}
	s.send(t, "DONE")
	for {
		line, err := s.readLine(expectWait)
		if err != nil {
			return lines, true
		}
		if rest, ok := strings.CutPrefix(line, s.idle+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				t.Fatalf("IDLE DONE: %s", rest)
			}
			return lines, false
		}
		lines = append(lines, line)
	}
}

// stampedLine is a line a listener read and when.
type stampedLine struct {
	line string
	at   time.Time
}

// listener reads an idling RawConn in a goroutine of its own and keeps
// every line with its arrival time, so that many sessions are read at once
// (a session the test does not read would itself be a slow reader). The
// RawConn belongs to the listener until halt returns.
type listener struct {
	name string
	c    *testkit.RawConn

	mu    sync.Mutex
	lines []stampedLine
	err   error
	wake  chan struct{}

	stop chan struct{}
	done chan struct{}
}

func listen(t *testing.T, name string, c *testkit.RawConn) *listener {
	l := &listener{name: name, c: c, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	t.Cleanup(l.halt)
	return l
}

func (l *listener) run() {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		line, err := l.c.ReadLine(50 * time.Millisecond)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		l.mu.Lock()
		if err != nil {
			l.err = err
		} else {
			l.lines = append(l.lines, stampedLine{line, time.Now()})
		}
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// halt stops the reading goroutine; the RawConn is the test's again.
func (l *listener) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// snapshot returns the lines read so far and the read error, if any.
func (l *listener) snapshot() ([]stampedLine, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines), l.err
}

// find waits until a line equal to want arrives at index from or later and
// returns its index and arrival time; ok is false after timeout.
func (l *listener) find(want string, from int, timeout time.Duration) (idx int, at time.Time, ok bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.lines); i++ {
			if l.lines[i].line == want {
				at := l.lines[i].at
				l.mu.Unlock()
				return i, at, true
			}
		}
		from = max(from, len(l.lines))
		failed := l.err != nil
		l.mu.Unlock()
		if failed {
			return 0, time.Time{}, false
		}
		select {
		case <-l.wake:
		case <-deadline.C:
			return 0, time.Time{}, false
		}
	}
}

// count returns the number of lines read so far.
func (l *listener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// durations is a sample of latencies.
type durations []time.Duration

func (d durations) quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (d durations) String() string {
	return fmt.Sprintf("n=%d p50=%v p90=%v max=%v", len(d), d.quantile(0.5).Round(time.Millisecond),
		d.quantile(0.9).Round(time.Millisecond), d.quantile(1).Round(time.Millisecond))
}

// sendMail submits msg to rcpt over SMTP like testkit.SendMail, but
// returns the error instead of failing the test, so that it can run in a
// goroutine and be timed against a bound.
func sendMail(addr, rcpt, msg string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	for _, step := range []func() error{
		func() error { return c.Hello("localhost") },
		func() error { return c.Mail("sender@maddy.test") },
		func() error { return c.Rcpt(rcpt) },
		func() error {
			w, err := c.Data()
			if err != nil {
				return err
			}
			if _, err := w.Write([]byte(msg)); err != nil {
				return err
			}
			return w.Close()
		},
		c.Quit,
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// probeResult is what measured rounds of changes found: per listener, the time
// from the start of the change's command to the arrival of its line.
type probeResult struct {
	latency  durations // per session and change
	commands durations // the acting sessions' commands
}

// probe makes one change per account that every listener of that account
// must hear about, rounds times, and measures. counts holds each
// account's Archive message count and is advanced.
type prober struct {
	t       *testing.T
	d       string // the store's delimiter, wire form
	actors  map[string]*imapclient.Client
	hearers map[string][]*listener
	archive map[string]int
	probes  int
}

// round: each account's actor APPENDs to Archive (a STATUS line for each of
// the account's listeners), then CREATEs and DELETEs a mailbox (two LIST
// lines). It fails the test if a listener misses a line for 10 s.
func (p *prober) round(res *probeResult) {
	t := p.t
	t.Helper()
	for _, acct := range []string{user, user2} {
		a := p.actors[acct]
		p.probes++
		name := fmt.Sprintf("Probe-%d", p.probes)
		steps := []struct {
			what string
			do   func() error
			line string
		}{
			{"APPEND Archive", func() error { return appendOnce(a, "Archive", testkit.Message(name)) },
				status(`"Archive"`, p.archive[acct]+1, p.archive[acct]+2, p.archive[acct]+1)},
			{"CREATE " + name, func() error { return a.Create(name, nil).Wait() },
				fmt.Sprintf(`* LIST (\HasNoChildren) %s "%s"`, p.d, name)},
			{"DELETE " + name, func() error { return a.Delete(name).Wait() },
				fmt.Sprintf(`* LIST (\NonExistent) %s "%s"`, p.d, name)},
		}
		for _, st := range steps {
			from := map[*listener]int{}
			for _, l := range p.hearers[acct] {
				from[l] = l.count()
			}
			start := time.Now()
			if err := testkit.RetryLocked(5, st.do); err != nil {
				t.Fatalf("%s as %s: %v", st.what, acct, err)
			}
			res.commands = append(res.commands, time.Since(start))
			if st.what == "APPEND Archive" {
				p.archive[acct]++
			}
			for _, l := range p.hearers[acct] {
				_, at, ok := l.find(st.line, from[l], 10*time.Second)
				if !ok {
					got, err := l.snapshot()
					t.Fatalf("%s did not get %q within 10s after %s (read error %v; last lines %q)", l.name, st.line, st.what, err, lastLines(got, 5))
				}
				res.latency = append(res.latency, at.Sub(start))
			}
		}
	}
}

func lastLines(lines []stampedLine, n int) []string {
	var out []string
	for _, l := range lines[max(0, len(lines)-n):] {
		out = append(out, l.line)
	}
	return out
}

// Bounds of TestRobustSlowReader. The latency of the other sessions and
// the acting sessions' commands are compared with a run before the stalled
// client existed, as a ratio of medians (below latencyFloor, differences
// are noise); every single sample must stay under latencyCeiling.
const (
	latencyRatio   = 3
	latencyFloor   = 50 * time.Millisecond
	latencyCeiling = 2 * time.Second
	// deliveryBound is how long one SMTP delivery or IMAP command may take
	// while the stalled client is stuck (generous: on an idle server each
	// takes milliseconds).
	deliveryBound = 5 * time.Second
	// floodLimit bounds the flood that fills the stalled client's window.
	floodLimit = 60 * time.Second
)

// timedChanges delivers a message over SMTP to each of rcpts, then APPENDs
// one to mailbox through a, one after the other in a goroutine, and waits
// deliveryBound for each. It returns what took longer or failed, and the
// channel on which what is still blocked reports when it ends (the test
// drains it once it has unblocked the server).
func timedChanges(t *testing.T, srv *testkit.Server, a *imapclient.Client, mailbox string, rcpts ...string) (rest <-chan string, late []string) {
	t.Helper()
	type timed struct {
		what string
		took time.Duration
		err  error
	}
	results := make(chan timed)
	done := make(chan string)
	go func() {
		defer close(results)
		for i, rcpt := range rcpts {
			st := time.Now()
			err := sendMail(srv.Addr("smtp"), rcpt, testkit.Message(fmt.Sprintf("delivery %d", i)), 60*time.Second)
			results <- timed{fmt.Sprintf("SMTP delivery %d to %s", i+1, rcpt), time.Since(st), err}
		}
		st := time.Now()
		err := testkit.RetryLocked(20, func() error { return appendOnce(a, mailbox, testkit.Message("append to "+mailbox)) })
		results <- timed{"APPEND " + mailbox, time.Since(st), err}
	}()
	expected := len(rcpts) + 1
	timeout := time.After(time.Duration(expected) * deliveryBound)
	for received := 0; received < expected; {
		select {
		case r := <-results:
			received++
			t.Logf("%s: %v in %v", r.what, r.err, r.took.Round(time.Millisecond))
			if r.err != nil || r.took > deliveryBound {
				late = append(late, fmt.Sprintf("%s: error %v after %v", r.what, r.err, r.took.Round(time.Millisecond)))
			}
		case <-timeout:
			late = append(late, fmt.Sprintf("%d of %d deliveries and commands still blocked after %v",
				expected-received, expected, time.Duration(expected)*deliveryBound))
			received = expected
		}
	}
	go func() {
		defer close(done)
		for r := range results {
			done <- r.what
		}
	}()
	return done, late
}

// TestRobustSlowReader: a client that IDLEs on INBOX and then never reads
// again (tiny receive window) harms only itself. While the module's lines
// pile up for it until its queue overflows, ten other IDLE sessions (five
// of the same account, five of another) get every notification with the
// latency they had before it existed; the acting sessions' APPEND, CREATE
// and DELETE, SMTP deliveries to the other account and an APPEND to
// another mailbox of its own complete promptly. The overflow is counted
// (maddy_notify_queue_overflows_total) and logged, the client keeps its
// connection, and once it reads again its view is resynchronised by state:
// its last STATUS of each mailbox, its mailbox set (it missed a CREATE and
// a DELETE while it was dropped) and its message count equal what the
// store says. (What the store writes into the stalled client's own
// mailbox is TestRobustStalledReaderStoreLock's.)
func TestRobustSlowReader(t *testing.T) {
	t.Parallel()
	srv := startNotifyMetrics(t)
	addr := srv.Addr("imap")
	actors := map[string]*imapclient.Client{
		user:  testkit.DialClient(t, addr, user, pass),
		user2: testkit.DialClient(t, addr, user2, pass),
	}
	for _, a := range actors {
		for _, box := range []string{"Archive", "Doomed"} {
			mustOK(t, "CREATE "+box, a.Create(box, nil).Wait())
		}
	}
	a := actors[user]
	setupFlood(t, a)

	p := &prober{t: t, actors: actors, hearers: map[string][]*listener{}, archive: map[string]int{}}
	for i := 0; i < 10; i++ {
		acct := []string{user, user2}[i%2]
		c := rawLogin(t, srv, acct)
		if p.d == "" {
			p.d = storeDelimiter(t, c)
		}
		rawSelect(t, c, "INBOX")
		c.Idle()
		p.hearers[acct] = append(p.hearers[acct], listen(t, fmt.Sprintf("%s session %d", acct, i/2+1), c))
	}

	var before probeResult
	for i := 0; i < 10; i++ {
		p.round(&before)
	}
	t.Logf("before the stalled client: notification latency %v; commands %v", before.latency, before.commands)

	// The stalled client: it learns the mailbox list and INBOX, then
	// IDLEs and stops reading.
	s := dialStalled(t, addr, user, "INBOX")
	view := seedView(t, "stalled client", "INBOX", func(cmd string) ([]string, string) { return s.cmd(t, cmd) })
	s.stall(t)

	// Fill its window until the module drops its queue.
	start := time.Now()
	hearer := p.hearers[user][0]
	listBefore := hearer.count()
	ops := 0
	for scrapeMetrics(t, srv).value(mQueueOverflows) == 0 {
		if time.Since(start) > floodLimit {
			t.Fatalf("no queue overflow after %d changes in %v: is the session queue bounded?", ops, floodLimit)
		}
		floodElsewhere(t, a, ops, 4)
		ops += 4
	}
	t.Logf("the stalled client's queue overflowed after %d changes in %v", ops, time.Since(start).Round(time.Millisecond))
	// While it is dropped: a mailbox appears, one goes.
	mustOK(t, "CREATE Born", a.Create("Born", nil).Wait())
	mustOK(t, "DELETE Doomed", a.Delete("Doomed").Wait())

	var during probeResult
	for i := 0; i < 10; i++ {
		p.round(&during)
	}
	t.Logf("with the stalled client stuck: notification latency %v; commands %v", during.latency, during.commands)
	for _, c := range []struct {
		what           string
		before, during durations
	}{
		{"notification latency", before.latency, during.latency},
		{"command duration", before.commands, during.commands},
	} {
		b, d := max(c.before.quantile(0.5), latencyFloor), c.during.quantile(0.5)
		if d > latencyRatio*b {
			t.Errorf("%s: median %v with the stalled client, %v before: more than %d times", c.what, d, b, latencyRatio)
		}
		if m := c.during.quantile(1); m > latencyCeiling {
			t.Errorf("%s: %v with the stalled client, over %v", c.what, m, latencyCeiling)
		}
	}

	// SMTP deliveries to the other account and an APPEND by another
	// session of the stalled client's account, to a mailbox it has not
	// selected. (Writes of the store into the stalled client's own
	// mailbox are TestRobustStalledReaderStoreLock's.)
	results, late := timedChanges(t, srv, a, "Archive", user2, user2)
	for _, l := range late {
		t.Errorf("blocked by the stalled client: %s", l)
	}

	// The stalled client reads again. What it missed comes as state.
	lines, gone := s.resume(t, 2*time.Second, 60*time.Second)
	for range results {
		// what was blocked ends once it reads
	}
	if gone {
		t.Fatalf("the server closed the stalled client's connection (after %d lines): it stalled only on the module's lines, which must not cost it the connection", len(lines))
	}
	for _, l := range lines {
		view.apply(l)
	}
	noop, tagged := s.cmd(t, "NOOP")
	if !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("NOOP: %s", tagged)
	}
	for _, l := range noop {
		view.apply(l)
	}
	listAfter := hearer.count() - listBefore
	t.Logf("after resuming, the stalled client read %d lines; a reading session of the account got %d meanwhile", len(lines), listAfter)
	if len(lines) >= listAfter {
		t.Errorf("the stalled client got %d lines, a reading session %d: nothing was dropped", len(lines), listAfter)
	}
	if _, ok := view.status["Archive"]; !ok {
		t.Errorf("the stalled client was never told Archive's STATUS, though Archive changed")
	}
	checkView(t, view, readTruth(t, rawLogin(t, srv, user), []string{"INBOX"}))

	final := scrapeMetrics(t, srv)
	if n := final.value(mResyncs, "reason", "overflow"); n < 1 {
		t.Errorf("%s{reason=overflow} = %v after an overflow", mResyncs, n)
	}
	if !strings.Contains(srv.Log(), "session queue overflow") {
		t.Errorf("maddy's log does not mention the session queue overflow")
	}
	for _, ls := range p.hearers {
		for _, l := range ls {
			if _, err := l.snapshot(); err != nil {
				t.Errorf("%s: %v", l.name, err)
			}
		}
	}
}

// floodElsewhere makes n changes through a that concern neither INBOX nor
// any message a stalled client on INBOX has: RENAMEs of a parent with 40
// long-named children, APPENDs to Flood, CREATE and DELETE of a long
// name. Stock maddy sends an INBOX session nothing for them; storage.notify
// sends it LIST and STATUS lines. The mailboxes must exist (setupFlood).
func floodElsewhere(t *testing.T, a *imapclient.Client, from, n int) {
	t.Helper()
	long := strings.Repeat("x", 200)
	for op := from; op < from+n; op++ {
		switch op % 4 {
		case 0:
			mustOK(t, "RENAME Parent Parent2", a.Rename("Parent", "Parent2", nil).Wait())
		case 1:
			mustOK(t, "RENAME Parent2 Parent", a.Rename("Parent2", "Parent", nil).Wait())
		case 2:
			appendRaw(t, a, "Flood", testkit.Message(fmt.Sprintf("flood %d", op)))
		case 3:
			mustOK(t, "CREATE F-long", a.Create("F-"+long, nil).Wait())
			mustOK(t, "DELETE F-long", a.Delete("F-"+long).Wait())
		}
	}
}

// setupFlood creates what floodElsewhere changes.
func setupFlood(t *testing.T, a *imapclient.Client) {
	t.Helper()
	mustOK(t, "CREATE Flood", a.Create("Flood", nil).Wait())
	long := strings.Repeat("x", 200)
	for i := 0; i < 40; i++ {
		mustOK(t, "CREATE child", a.Create(fmt.Sprintf("Parent.%s-%02d", long, i), nil).Wait())
	}
}

// TestRobustStalledReaderStoreLock: where the blocking that
// TestRobustSlowReader finds comes from. go-imap-mess writes the selected
// mailbox's updates to a session while it holds that session's handle
// lock, and go-imap-sql announces a new message to the handles from inside
// its SQL transaction: once a session's socket is full, the store's next
// write to it never returns, the next APPEND or delivery into that mailbox
// waits for the handle lock forever, and with SQLite every other writer of
// the server waits for the transaction ("database is locked"). The same
// scenario runs against the bare store and through storage.notify:
//
//   - changes elsewhere: a client stalls on INBOX, another session changes
//     other mailboxes (what overflows it in TestRobustSlowReader), then
//     mail arrives in INBOX. Stock maddy sends the stalled client nothing
//     for the changes elsewhere, so its socket has room for the store's
//     EXISTS and nothing blocks. storage.notify must keep it so.
//   - changes in its mailbox: a session changes flags in INBOX until the
//     stalled client's socket is full of the store's own FETCH FLAGS; then
//     the acting session and the deliveries block in stock maddy too (the
//     bare subtest documents that behaviour of the store, and fails if
//     maddy stops having it). Through storage.notify, the stall guard
//     disconnects the client once one of the store's writes to it has
//     waited stall_timeout (2 s by default), so nothing waits longer.
func TestRobustStalledReaderStoreLock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, config string
		elsewhere    bool
	}{
		{"bare, changes elsewhere", config(bare), true},
		{"notify, changes elsewhere", notifyConfig(), true},
		{"bare, changes in its mailbox", config(bare), false},
		{"notify, changes in its mailbox", notifyConfig(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testkit.Start(t, testkit.Options{Config: tc.config, Ports: []string{"imap", "smtp"}})
			a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
			setupFlood(t, a)
			for i := 0; i < 20; i++ {
				appendMsg(t, a, "INBOX", fmt.Sprintf("inbox %d", i))
			}
			s := dialStalled(t, srv.Addr("imap"), user, "INBOX")
			s.stall(t)

			var stuck []string
			if tc.elsewhere {
				// Twice what overflowed the queue in TestRobustSlowReader.
				floodElsewhere(t, a, 0, 400)
			} else {
				stuck = floodFlags(t, srv)
			}
			_, late := timedChanges(t, srv, a, "INBOX", user, user)
			late = append(stuck, late...)
			switch {
			case tc.elsewhere:
				for _, l := range late {
					t.Errorf("blocked by a client that stalled on INBOX, after changes elsewhere: %s", l)
				}
			case tc.config != config(bare):
				// The stall guard disconnects the client once one of the
				// store's writes to it has waited stall_timeout.
				for _, l := range late {
					t.Errorf("blocked by a client that stalled on INBOX, after changes in INBOX: %s", l)
				}
			case len(late) == 0:
				t.Errorf("the store no longer blocks on a stalled client of the mailbox: update docs/guarantees.md")
			default:
				t.Logf("the store blocks, as documented: %q", late)
			}
			// Unblock the server (if it has not disconnected the client).
			s.resume(t, 2*time.Second, 60*time.Second)
		})
	}
}

// TestRobustStallTimeoutDirective: stall_timeout sets how long the
// store's write to a stalled client may hold that client's mailbox. With
// 7s, longer than deliveryBound, a STORE of another session in INBOX waits
// for the stalled client longer than deliveryBound (floodFlags reports it
// stuck, as on the bare store); then the module ends the stalled
// connection, and deliveries and an APPEND into INBOX complete in time.
func TestRobustStallTimeoutDirective(t *testing.T) {
	t.Parallel()
	srv := testkit.Start(t, testkit.Options{Config: notifyConfig("stall_timeout 7s"), Ports: []string{"imap", "smtp"}})
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	for i := 0; i < 20; i++ {
		appendMsg(t, a, "INBOX", fmt.Sprintf("inbox %d", i))
	}
	s := dialStalled(t, srv.Addr("imap"), user, "INBOX")
	s.stall(t)
	stuck := floodFlags(t, srv)
	if len(stuck) == 0 {
		t.Fatalf("no STORE waited longer than %v for the stalled client: stall_timeout 7s was not applied", deliveryBound)
	}
	t.Logf("as configured, the store waited for the stalled client: %q", stuck)
	_, late := timedChanges(t, srv, a, "INBOX", user, user)
	for _, l := range late {
		t.Errorf("still blocked after stall_timeout: %s", l)
	}
	if _, gone := s.resume(t, 2*time.Second, 30*time.Second); !gone {
		t.Errorf("the stalled client's connection is still open after stall_timeout")
	}
}

// floodFlags sets and clears 100 long keywords on the 20 messages of INBOX
// from a session of its own, so that the store writes FETCH FLAGS lines of
// about 4 KiB per message to every other session that has INBOX selected,
// until one STORE takes longer than deliveryBound (it is stuck behind a
// stalled session) or 50 STOREs are done (about 4 MiB for each session).
// It returns what got stuck; the STORE still blocked finishes on its own
// once the server is unblocked.
func floodFlags(t *testing.T, srv *testkit.Server) (stuck []string) {
	t.Helper()
	c := testkit.DialRaw(t, srv.Addr("imap"))
	c.Login(user, pass)
	rawSelect(t, c, "INBOX")
	var kw []string
	for i := 0; i < 100; i++ {
		kw = append(kw, fmt.Sprintf("$Keyword%02d-%s", i, strings.Repeat("k", 30)))
	}
	flags := "(" + strings.Join(kw, " ") + ")"
	for i := 0; i < 50; i++ {
		op := "+FLAGS.SILENT"
		if i%2 == 1 {
			op = "-FLAGS.SILENT"
		}
		start := time.Now()
		c.Send(fmt.Sprintf("F%d STORE 1:* %s %s", i, op, flags))
		for {
			line, err := c.ReadLine(deliveryBound)
			if err != nil {
				return []string{fmt.Sprintf("STORE %d of 50 by another session of INBOX: no answer after %v (%v)", i+1, time.Since(start).Round(time.Millisecond), err)}
			}
			if strings.HasPrefix(line, fmt.Sprintf("F%d ", i)) {
				if !strings.Contains(line, " OK") {
					t.Fatalf("STORE: %s", line)
				}
				break
			}
		}
	}
	return nil
}

// isolationConfig maps four login names to two storage accounts on the
// IMAP endpoint (storage_map): phone and laptop are alice's devices, bob
// and tablet bob's.
const isolationConfig = `
storage.imapsql local_mailboxes {
	driver sqlite3
	dsn imapsql.db
}

storage.notify notified_mailboxes {
	storage &local_mailboxes
	plain_clients draft
}

imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &notified_mailboxes
	storage_map static {
		entry phone@maddy.test alice@maddy.test
		entry laptop@maddy.test alice@maddy.test
		entry bob@maddy.test bob@maddy.test
		entry tablet@maddy.test bob@maddy.test
	}
}

smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &notified_mailboxes
}
`

// TestRobustAccountIsolation: two storage accounts, each used through two
// login names mapped by storage_map, change their mailboxes at the same
// time from two sessions each (CREATE, APPEND, RENAME, DELETE of mailboxes
// whose names carry the account's secret; APPENDs to a mailbox both
// accounts have under the same name; SMTP deliveries). Every IDLE session
// of one account, whichever login it used, hears all of its account's
// changes and ends with exactly its account's state, and no line it ever
// gets names the other account's secret.
func TestRobustAccountIsolation(t *testing.T) {
	t.Parallel()
	const rounds = 15
	srv := testkit.Start(t, testkit.Options{Config: isolationConfig, Ports: []string{"imap", "smtp"}})
	accounts := []struct {
		name, secret string
		logins       []string
		other        string // the other account's secret
	}{
		{"alice@maddy.test", "alicesecret", []string{"phone@maddy.test", "laptop@maddy.test"}, "bobsecret"},
		{"bob@maddy.test", "bobsecret", []string{"bob@maddy.test", "tablet@maddy.test"}, "alicesecret"},
	}
	for _, acct := range accounts {
		a := testkit.DialClient(t, srv.Addr("imap"), acct.logins[0], pass)
		mustOK(t, "CREATE Common", a.Create("Common", nil).Wait())
		appendMsg(t, a, "Common", "first")
	}

	type hearer struct {
		l    *listener
		view *viewModel
		acct int
	}
	var hearers []hearer
	for i, acct := range accounts {
		for j, login := range []string{acct.logins[0], acct.logins[1], acct.logins[1]} {
			mailbox := []string{"INBOX", "Common", "INBOX"}[j]
			c := rawLogin(t, srv, login)
			who := fmt.Sprintf("%s session %d (%s on %s)", acct.name, j+1, login, mailbox)
			v := seedView(t, who, mailbox, c.Cmd)
			c.Idle()
			hearers = append(hearers, hearer{listen(t, who, c), v, i})
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, acct := range accounts {
		for k, login := range acct.logins {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := imapclient.DialInsecure(srv.Addr("imap"), nil)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if err := c.Login(login, pass).Wait(); err != nil {
					errs <- err
					return
				}
				for i := 0; i < rounds; i++ {
					name := fmt.Sprintf("%s-%d-%d", acct.secret, k, i)
					steps := []struct {
						what string
						op   func() error
					}{
						{"CREATE " + name, func() error { return c.Create(name, nil).Wait() }},
						{"APPEND " + name, func() error { return appendOnce(c, name, testkit.Message(name)) }},
						{"APPEND Common", func() error { return appendOnce(c, "Common", testkit.Message(name+" common")) }},
						{"RENAME " + name, func() error { return c.Rename(name, name+"-renamed", nil).Wait() }},
					}
					if i%3 == 2 {
						steps = append(steps, struct {
							what string
							op   func() error
						}{"DELETE " + name, func() error { return c.Delete(name + "-renamed").Wait() }})
					}
					if i%5 == 0 {
						steps = append(steps, struct {
							what string
							op   func() error
						}{"SMTP to " + acct.name, func() error {
							return sendMail(srv.Addr("smtp"), acct.name, testkit.Message(name+" smtp"), 30*time.Second)
						}})
					}
					for _, st := range steps {
						if err := testkit.RetryLocked(20, st.op); err != nil {
							errs <- fmt.Errorf("%s as %s: %w", st.what, login, err)
							return
						}
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Let the last notifications land, then compare.
	var ls []*listener
	for _, h := range hearers {
		ls = append(ls, h.l)
	}
	quietFor(time.Second, 30*time.Second, ls...)
	truths := map[int]storeTruth{}
	for i, acct := range accounts {
		truths[i] = readTruth(t, rawLogin(t, srv, acct.logins[0]), []string{"INBOX", "Common"})
	}
	for _, h := range hearers {
		lines := finishListening(t, h.l)
		own := 0
		for _, l := range lines {
			if strings.Contains(l, accounts[h.acct].other) {
				t.Errorf("%s got a line of the other account: %q", h.l.name, l)
			}
			if strings.Contains(l, accounts[h.acct].secret) {
				own++
			}
			h.view.apply(l)
		}
		// The account's two acting sessions each created and renamed
		// `rounds` mailboxes: at least a CREATE and a RENAME line for
		// each (not vacuous: the session did hear its own account).
		if want := 2 * 2 * rounds; own < want {
			t.Errorf("%s got %d lines naming its own account's mailboxes, want at least %d (CREATE and RENAME of each)", h.l.name, own, want)
		}
		checkView(t, h.view, truths[h.acct])
	}
}

// quietFor waits until none of ls has read anything new for quiet, at
// most limit.
func quietFor(quiet, limit time.Duration, ls ...*listener) {
	deadline := time.Now().Add(limit)
	total := func() int {
		n := 0
		for _, l := range ls {
			n += l.count()
		}
		return n
	}
	n := total()
	for time.Now().Before(deadline) {
		time.Sleep(quiet) // the quiet period itself, not for correctness
		m := total()
		if m == n {
			return
		}
		n = m
	}
}

// finishListening stops l, ends its session's IDLE and polls once: it
// returns every line the session got, in order (also those that came with
// DONE and the NOOP).
func finishListening(t *testing.T, l *listener) []string {
	t.Helper()
	l.halt()
	got, err := l.snapshot()
	if err != nil {
		t.Fatalf("%s: %v", l.name, err)
	}
	var lines []string
	for _, s := range got {
		lines = append(lines, s.line)
	}
	lines = append(lines, l.c.Done()...)
	lines = append(lines, mustCmd(t, l.c, "NOOP")...)
	return lines
}

// TestRobustRenameRightAfterAppend: a mailbox that gets a message and is
// renamed at once (APPEND and RENAME pipelined by one client) ends, for a
// session listening elsewhere, with the STATUS of the renamed mailbox: the
// STATUS query for the old name, when it runs after the RENAME, finds
// nothing, and the new name must be queried instead of the change being
// lost.
func TestRobustRenameRightAfterAppend(t *testing.T) {
	t.Parallel()
	const n = 30
	srv := startNotify(t)
	b := rawLogin(t, srv, user)
	view := seedView(t, "listener", "INBOX", b.Cmd)
	b.Idle()
	l := listen(t, "listener", b)

	a := rawLogin(t, srv, user)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("Box%02d", i)
		mustCmd(t, a, "CREATE "+name)
		msg := testkit.Message(name)
		a.Send(fmt.Sprintf("P%da APPEND %s {%d+}\r\n%s\r\nP%db RENAME %s %s-renamed", i, name, len(msg), msg, i, name, name))
		for done := 0; done < 2; {
			line, err := a.ReadLine(expectWait)
			if err != nil {
				t.Fatalf("pipelined APPEND and RENAME %d: %v", i, err)
			}
			if strings.HasPrefix(line, fmt.Sprintf("P%d", i)) {
				if !strings.Contains(line, " OK") {
					t.Fatalf("pipelined APPEND and RENAME %d: %s", i, line)
				}
				done++
			}
		}
	}
	quietFor(time.Second, 30*time.Second, l)
	for _, line := range finishListening(t, l) {
		view.apply(line)
	}
	checkView(t, view, readTruth(t, rawLogin(t, srv, user), []string{"INBOX"}))
}

// parseFetchLineV2 parses a FETCH line with go-imap v2 (as unilateral data
// during a NOOP against a scripted server that answers with the line).
func parseFetchLineV2(t *testing.T, line string) (*imapclient.FetchMessageBuffer, error) {
	t.Helper()
	srvConn, cliConn := net.Pipe()
	deadline := time.Now().Add(v2Timeout)
	srvConn.SetDeadline(deadline)
	cliConn.SetDeadline(deadline)
	go func() {
		defer srvConn.Close()
		r := bufio.NewReader(srvConn)
		if _, err := srvConn.Write([]byte("* OK scripted\r\n")); err != nil {
			return
		}
		for {
			cmd, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag := strings.Fields(cmd)[0]
			if _, err := srvConn.Write([]byte(line + "\r\n" + tag + " OK done\r\n")); err != nil {
				return
			}
		}
	}()
	got := make(chan *imapclient.FetchMessageBuffer, 1)
	fetchErr := make(chan error, 1)
	c := imapclient.New(cliConn, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				fetchErr <- err
				return
			}
			got <- buf
		},
	}})
	defer c.Close()
	if err := c.Noop().Wait(); err != nil {
		return nil, err
	}
	select {
	case m := <-got:
		return m, nil
	case err := <-fetchErr:
		return nil, err
	case <-time.After(v2Timeout):
		return nil, errors.New("no FETCH")
	}
}

// TestRobustHostileFlags: a client can store any string as a flag (go-imap
// v1's server takes quoted strings and literals in a flag list, and
// go-imap-sql keeps them). The FETCH line storage.notify writes for a new
// message must still parse in a strict client (go-imap v2) for every other
// session: flags IMAP cannot carry are left out, never written raw. The
// store's own FETCH FLAGS of a STORE is forwarded unchanged (stock
// maddy's bytes); the test logs whether it parses, for docs/guarantees.md.
func TestRobustHostileFlags(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := idler(t, srv, user, "INBOX")
	a := rawLogin(t, srv, user)
	hostile := []string{`a)b`, `x y`, `(`, `{3}`, `"q"`}
	var quoted []string
	for _, f := range hostile {
		quoted = append(quoted, testkit.Quote(f))
	}
	msg := testkit.Message("hostile flags")
	untagged, tagged := a.Cmd(fmt.Sprintf("APPEND INBOX (%s $Fine) {%d+}\r\n%s", strings.Join(quoted, " "), len(msg), msg))
	if !strings.HasPrefix(tagged, "OK") {
		t.Skipf("the store rejects hostile flags (%q %s): nothing to check", untagged, tagged)
	}
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	line := expectNewMessage(t, b, 1)
	m, err := parseFetchLineV2(t, line)
	switch {
	case err != nil:
		t.Errorf("storage.notify wrote a FETCH that go-imap v2 cannot parse: %q: %v", line, err)
	case m.UID != 1 || !slices.ContainsFunc(m.Flags, func(f imap.Flag) bool { return strings.EqualFold(string(f), "$Fine") }):
		t.Errorf("storage.notify's FETCH %q parsed as UID %d flags %q; want UID 1 and $Fine among the flags", line, m.UID, m.Flags)
	}

	// The store's own line for a flag change, for the record.
	rawSelect(t, a, "INBOX")
	mustCmd(t, a, `STORE 1 +FLAGS.SILENT ("p)q")`)
	stock := readLines(t, b, expectWait, 1)[0]
	if _, err := parseFetchLineV2(t, stock); err != nil {
		t.Logf("the store's own FETCH FLAGS (stock maddy, forwarded unchanged) does not parse in go-imap v2: %q: %v", stock, err)
	}
	b.ExpectNothing(t, quietWait)
}

// TestRobustHostileNames: mailbox names IMAP cannot carry as event names
// (with NUL, CR or LF, which modified UTF-7 can smuggle in: "&AAA-",
// "&AA0-", "&AAo-"), invalid modified UTF-7, raw 8-bit and control
// characters. go-imap's parser refuses the last three (BAD); the store
// takes the first three. Then the event is dropped and logged ("dropping
// invalid event": docs/guarantees.md), never written as a line that breaks
// another session: whatever a listener gets parses in go-imap v2.
func TestRobustHostileNames(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := idler(t, srv, user, "INBOX")
	a := rawLogin(t, srv, user)
	for _, name := range []string{`"&AAA-"`, `"a&AA0-b"`, `"a&AAo-b"`, `"a&Jjo"`, `"&Jjo-&Jjo-"`, "\"Entw\xc3\xbcrfe\"", "{5+}\r\na\r\nbc", `"a` + "\x01" + `b"`} {
		dropped := strings.Count(srv.Log(), "dropping invalid event")
		untagged, tagged := a.Cmd("CREATE " + name)
		accepted := strings.HasPrefix(tagged, "OK")
		t.Logf("CREATE %q: %q %s", name, untagged, tagged)
		lines, _, err := collectUntilQuiet(b, 500*time.Millisecond, expectWait)
		if err != nil {
			t.Fatalf("reading the listener: %v", err)
		}
		if !accepted && len(lines) != 0 {
			t.Errorf("CREATE %q was refused, yet the listener got %q", name, lines)
		}
		if accepted && len(lines) == 0 && strings.Count(srv.Log(), "dropping invalid event") == dropped {
			t.Errorf("CREATE %q was accepted, the listener got nothing, and maddy's log does not say why", name)
		}
		for _, l := range lines {
			d, err := parseListV2(t, l)
			if err != nil {
				t.Errorf("CREATE %q: the listener got %q, which go-imap v2 cannot parse: %v", name, l, err)
				continue
			}
			t.Logf("CREATE %q: the listener got %q (%q)", name, l, d.Mailbox)
		}
		if accepted {
			listed := mustCmd(t, a, `LIST "" "*"`)
			t.Logf("LIST after CREATE %q: %q", name, listed)
		}
	}
}

// goGoroutines is the Go runtime's goroutine count that maddy's
// openmetrics endpoint exports (the default Prometheus registry's Go
// collector).
const goGoroutines = "go_goroutines"

// goroutinesOf scrapes maddy's goroutine count.
func goroutinesOf(t *testing.T, srv *testkit.Server) float64 {
	t.Helper()
	f := scrapeMetrics(t, srv)[goGoroutines]
	if f == nil || len(f.GetMetric()) != 1 {
		t.Fatalf("maddy exports no %s", goGoroutines)
	}
	return f.GetMetric()[0].GetGauge().GetValue()
}

// TestRobustDisconnectMidPush: twenty sessions IDLE while another session
// makes changes as fast as it can (LIST and STATUS lines flow to all of
// them); they go away in the middle of it, half with a reset, half with a
// plain close, some while they have stopped reading. Every one of them
// leaves the registry (maddy_notify_sessions and sessions_idling back to
// 0), maddy's goroutine count comes back to what it was before they
// connected, and nothing panics.
func TestRobustDisconnectMidPush(t *testing.T) {
	t.Parallel()
	const n = 20
	srv := startNotifyMetrics(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	appendMsg(t, a, "Archive", "warm up")
	time.Sleep(time.Second) // let maddy's own goroutines settle (not for correctness)
	baseline := goroutinesOf(t, srv)

	var conns []net.Conn
	for i := 0; i < n; i++ {
		var conn net.Conn
		if i%4 == 3 {
			s := dialStalled(t, srv.Addr("imap"), user, "INBOX")
			s.stall(t)
			conn = s.conn
		} else {
			c, err := net.DialTimeout("tcp", srv.Addr("imap"), expectWait)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			// A client that reads (the kernel's buffer does) and
			// answers nothing: its lines go nowhere after IDLE.
			fmt.Fprintf(c, "a LOGIN %s %s\r\nb SELECT INBOX\r\nc IDLE\r\n", testkit.Quote(user), testkit.Quote(pass))
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
			conn = c
		}
		conns = append(conns, conn)
	}
	waitMetric(t, srv, n, mSessionsIdling)
	if during := goroutinesOf(t, srv); during < baseline+n {
		t.Fatalf("maddy has %v goroutines with %d sessions, %v without: the check below would prove nothing", during, n, baseline)
	} else {
		t.Logf("goroutines: %v before the sessions, %v with them", baseline, during)
	}

	stop := make(chan struct{})
	flooded := make(chan error, 1)
	go func() {
		var err error
		defer func() { flooded <- err }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("Churn%d", i%10)
			if err = testkit.RetryLocked(20, func() error { return a.Create(name, nil).Wait() }); err != nil {
				return
			}
			if err = testkit.RetryLocked(20, func() error { return appendOnce(a, "Archive", testkit.Message(name)) }); err != nil {
				return
			}
			if err = testkit.RetryLocked(20, func() error { return a.Delete(name).Wait() }); err != nil {
				return
			}
		}
	}()
	for i, conn := range conns {
		time.Sleep(50 * time.Millisecond) // spread the disconnects over the flood
		if i%2 == 0 {
			conn.(*net.TCPConn).SetLinger(0) // close with a reset
		}
		conn.Close()
	}
	close(stop)
	if err := <-flooded; err != nil {
		t.Fatalf("the acting session: %v", err)
	}
	waitMetric(t, srv, 0, mSessionsIdling)
	waitMetric(t, srv, 0, mSessions)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := goroutinesOf(t, srv)
		if got <= baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("maddy has %v goroutines, %v before the sessions connected: %v leaked; its goroutines:\n%s",
				got, baseline, got-baseline, srv.DumpGoroutines())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(srv.Log(), "panic") {
		t.Errorf("maddy's log mentions a panic")
	}
}

// TestRobustShutdown: SIGTERM ends maddy within testkit.StopTimeout, with
// a zero exit status and no panic, while sessions IDLE, one polls, a
// client has stopped reading with the module's lines piled up for it
// (its writer goroutine blocked in a write), and — in the second case —
// an SMTP delivery is blocked behind that client by the store
// (TestRobustStalledReaderStoreLock). The stalled connections stay open
// until maddy has exited: their close is registered before testkit.Start,
// so it runs after testkit's cleanup, which sends SIGTERM and fails the
// test if maddy hangs or exits with an error.
func TestRobustShutdown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		deliver bool
	}{
		{"stalled client", false},
		{"stalled client and a delivery blocked behind it", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var closers []func()
			t.Cleanup(func() {
				for _, c := range closers {
					c()
				}
			})
			srv := startNotifyMetrics(t)
			a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
			setupFlood(t, a)
			for i := 0; i < 3; i++ {
				idler(t, srv, user, "INBOX")
			}
			poller := rawLogin(t, srv, user)
			rawSelect(t, poller, "INBOX")

			s := dialStalledClosing(t, srv.Addr("imap"), user, "INBOX", func(f func()) { closers = append(closers, f) })
			s.stall(t)
			floodElsewhere(t, a, 0, 400) // as in TestRobustStalledReaderStoreLock
			if scrapeMetrics(t, srv).value(mQueueOverflows) == 0 {
				t.Fatal("the stalled client's queue did not overflow")
			}
			if tc.deliver {
				// The first delivery's EXISTS is the store's last write
				// to the stalled client; the second waits for it.
				if err := sendMail(srv.Addr("smtp"), user, testkit.Message("first"), expectWait); err != nil {
					t.Fatalf("first delivery: %v", err)
				}
				blocked := make(chan error, 1)
				go func() { blocked <- sendMail(srv.Addr("smtp"), user, testkit.Message("second"), 60*time.Second) }()
				select {
				case err := <-blocked:
					t.Logf("the second delivery was not blocked (%v): the shutdown below is the plain case", err)
				case <-time.After(deliveryBound):
				}
			}
			mustCmd(t, poller, "NOOP")
			// The test ends here: SIGTERM with all of the above going on.
		})
	}
}

// TestRobustSubscribeMissingMailbox: SUBSCRIBE and UNSUBSCRIBE of a mailbox
// that does not exist (go-imap-sql answers OK and keeps nothing) must not
// make another session believe the mailbox exists: it gets no line, or
// one with \NonExistent.
func TestRobustSubscribeMissingMailbox(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := idler(t, srv, user, "INBOX")
	a := rawLogin(t, srv, user)
	for _, cmd := range []string{"SUBSCRIBE Ghost", "UNSUBSCRIBE Ghost"} {
		mustCmd(t, a, cmd)
		lines, _, err := collectUntilQuiet(b, quietWait, expectWait)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if !strings.Contains(l, `\NonExistent`) {
				t.Errorf("%s of a mailbox that does not exist: the listener got %q, which says it exists", cmd, l)
			}
		}
	}
	if listed := mustCmd(t, a, `LIST "" "Ghost"`); len(listed) != 0 {
		t.Fatalf("the store lists %q: the test's premise is wrong", listed)
	}
}

// TestRobustStoreMoveOrder documents a limit of the store that the module
// inherits (docs/guarantees.md): go-imap-sql announces the messages a MOVE
// adds after its transaction, so MOVEs into one mailbox at the same time
// can announce their UIDs out of order; go-imap-mess appends them to each
// session's sequence in that order and then numbers them by binary search,
// so a session that has the mailbox selected sees wrong sequence numbers
// (its own FETCH 1:* (UID) differs from a fresh SELECT's). It runs on the
// bare store; it is skipped when the race did not happen in this run.
func TestRobustStoreMoveOrder(t *testing.T) {
	t.Parallel()
	srv := start(t, bare)
	b := rawLogin(t, srv, user)
	rawSelect(t, b, "INBOX")
	b.Idle()
	l := listen(t, "listener", b)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := imapclient.DialInsecure(srv.Addr("imap"), nil)
			if err != nil {
				return
			}
			defer c.Close()
			box := fmt.Sprintf("Src%d", i)
			if c.Login(user, pass).Wait() != nil || c.Create(box, nil).Wait() != nil {
				return
			}
			for j := 0; j < 100; j++ {
				if appendOnce(c, box, testkit.Message(fmt.Sprintf("%d %d", i, j))) != nil {
					continue
				}
				if _, err := c.Select(box, nil).Wait(); err == nil {
					c.Move(imap.SeqSetNum(1), "INBOX").Wait()
				}
			}
		}()
	}
	wg.Wait()
	quietFor(time.Second, 30*time.Second, l)
	finishListening(t, l)
	uids := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if strings.Contains(l, " FETCH (UID ") {
				out = append(out, l)
			}
		}
		return out
	}
	own := uids(mustCmd(t, b, "FETCH 1:* (UID)"))
	f := rawLogin(t, srv, user)
	rawSelect(t, f, "INBOX")
	fresh := uids(mustCmd(t, f, "FETCH 1:* (UID)"))
	for i := range min(len(own), len(fresh)) {
		if own[i] != fresh[i] {
			t.Logf("as documented, the store numbers the listener's messages wrongly after concurrent MOVEs: from message %d its FETCH says %q, a fresh session's %q",
				i+1, own[i:min(i+3, len(own))], fresh[i:min(i+3, len(fresh))])
			return
		}
	}
	t.Skip("the concurrent MOVEs did not announce out of order in this run")
}
