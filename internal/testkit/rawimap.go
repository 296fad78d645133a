// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/imapwire"
)

// ExpectTimeout is the default time RawConn waits for a line the test
// expects (a command's response, IDLE's continuation, DONE's OK).
const ExpectTimeout = 5 * time.Second

// RawConn is an IMAP connection that speaks the protocol line by line, so a
// test can assert the exact bytes the server sends. Lines are returned
// without their CRLF; a line that announces literals ({n} at its end)
// is returned with the literals' bytes and the rest of the line appended,
// as one string (internal/imapwire reads them).
//
// Every untagged line it reads is checked against RFC 3501's formal syntax
// as it arrives, except a command's own answer (isAnswer: maddy's, not the
// module's): a line storage.notify wrote that fails the check fails the
// test; of the store's lines that fail, the first is logged and the number
// reported when the test ends. Until the connection has sent NOTIFY SET
// the lines are held to the plain grammar (CheckPlainModuleLine: no LIST
// extended data such as OLDNAME, which a client that did not ask for
// NOTIFY cannot parse); from then on to the full one (CheckModuleLine).
//
// RawConn is not safe for concurrent use; its methods must be called from
// the test's goroutine. It is closed when the test ends.
type RawConn struct {
	// Greeting is the server's greeting line.
	Greeting string

	// Timeout bounds how long Cmd, Login, Idle and Done wait for each
	// line; ExpectTimeout unless changed.
	Timeout time.Duration

	t       testing.TB
	conn    net.Conn
	r       *imapwire.LineReader // keeps an unfinished line across timeouts
	tag     int
	queued  []string // lines read ahead (by Idle) that ReadLine returns first
	idleTag string   // tag of the running IDLE command, "" if none
	cmdTag  string   // tag of the command Cmd runs, "" if none
	cmd     string   // that command
	faults  int      // lines not of the module that failed the syntax check
	notify  bool     // NOTIFY SET was sent: the full grammar applies
}

// DialRaw connects to the IMAP server at addr, reads its greeting (which
// must be "* OK ...") and registers a cleanup that closes the connection.
func DialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ExpectTimeout)
	if err != nil {
		t.Fatalf("testkit: dial IMAP %s: %v", addr, err)
	}
	c := &RawConn{Timeout: ExpectTimeout, t: t, conn: conn, r: imapwire.NewLineReader(bufio.NewReader(conn))}
	t.Cleanup(func() {
		conn.Close()
		if c.faults > 1 {
			t.Logf("testkit: %d lines from %s not of the module were not RFC 3501 syntax (the first is logged above)", c.faults, addr)
		}
	})
	g, err := c.ReadLine(ExpectTimeout)
	if err != nil {
		t.Fatalf("testkit: IMAP greeting from %s: %v", addr, err)
	}
	if !strings.HasPrefix(g, "* OK") {
		t.Fatalf("testkit: IMAP greeting from %s: %q", addr, g)
	}
	c.Greeting = g
	return c
}

// Login sends LOGIN with user and pass as quoted strings and fails the test
// unless the server answers OK.
func (c *RawConn) Login(user, pass string) {
	c.t.Helper()
	_, tagged := c.Cmd("LOGIN " + Quote(user) + " " + Quote(pass))
	if !strings.HasPrefix(tagged, "OK") {
		c.t.Fatalf("testkit: LOGIN %s: %s", user, tagged)
	}
}

// Cmd sends cmd with the next tag ("T1", "T2", ...) and reads the response:
// the untagged lines in order and the tagged completion line without its
// tag (e.g. "OK SELECT completed"). Lines the server sent earlier and
// nobody read yet are part of untagged. Cmd fails the test on a
// continuation request (use Send for commands with literals), on I/O
// errors, if a line does not arrive within c.Timeout, and during IDLE.
func (c *RawConn) Cmd(cmd string) (untagged []string, tagged string) {
	c.t.Helper()
	if c.idleTag != "" {
		c.t.Fatalf("testkit: Cmd(%q) while %s IDLE is running; call Done first", cmd, c.idleTag)
	}
	tag := c.nextTag()
	c.cmdTag, c.cmd = tag, cmd
	defer func() { c.cmdTag, c.cmd = "", "" }()
	c.Send(tag + " " + cmd)
	for {
		line, err := c.ReadLine(c.Timeout)
		if err != nil {
			c.t.Fatalf("testkit: %s %s: %v (untagged so far: %q)", tag, cmd, err, untagged)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return untagged, rest
		}
		if strings.HasPrefix(line, "+") {
			c.t.Fatalf("testkit: %s %s: unexpected continuation request %q", tag, cmd, line)
		}
		untagged = append(untagged, line)
	}
}

// Send writes line and CRLF. It fails the test on an I/O error. A line
// that is a NOTIFY SET command switches the syntax check to the full
// grammar for the rest of the connection.
func (c *RawConn) Send(line string) {
	c.t.Helper()
	if notifySetRe.MatchString(line) {
		c.notify = true
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.t.Fatalf("testkit: send %q: %v", line, err)
	}
}

// ReadLine returns the next line from the server, waiting at most timeout.
// On timeout it returns an error that matches os.ErrDeadlineExceeded and
// keeps what it read of an incomplete line for the next call, so a timeout
// loses nothing.
func (c *RawConn) ReadLine(timeout time.Duration) (string, error) {
	if len(c.queued) > 0 {
		line := c.queued[0]
		c.queued = c.queued[1:]
		return line, nil
	}
	line, err := c.readConn(timeout)
	if err == nil {
		c.check(line)
	}
	return line, err
}

// check holds an untagged line just read to RFC 3501 syntax
// (CheckModuleLine), unless it is the running command's own answer.
func (c *RawConn) check(line string) {
	c.t.Helper()
	if strings.HasPrefix(line, "+") || (c.idleTag != "" && strings.HasPrefix(line, c.idleTag+" ")) ||
		(c.cmdTag != "" && strings.HasPrefix(line, c.cmdTag+" ")) || !strings.HasPrefix(line, "* ") {
		return // continuation requests and tagged responses
	}
	if c.cmdTag != "" && isAnswer(c.cmd, line) {
		return
	}
	src, err := lineError(line, !c.notify)
	if err == nil {
		return
	}
	if src != SourceModule {
		// The store's lines (stock) may repeat by the thousand in a
		// soak: the first is logged, the count at the end.
		if c.faults++; c.faults > 1 {
			return
		}
	}
	reportLine(c.t, src, line, err)
}

// readConn reads the next line from the connection, waiting at most
// timeout; an unfinished line stays in c.r for the next call.
func (c *RawConn) readConn(timeout time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	return c.r.Next()
}

// notifySetRe matches a tagged NOTIFY SET command line.
var notifySetRe = regexp.MustCompile(`(?i)^[^ ]+ NOTIFY SET[ (]`)

// Notify reports whether the connection has sent NOTIFY SET, so that its
// lines are held to the full grammar rather than the plain one.
func (c *RawConn) Notify() bool { return c.notify }

// Idle sends IDLE and waits for the server's continuation request ("+ ...").
// Untagged lines that arrive before it are kept and returned by the next
// reads (ReadLine, Expect, Done), so they are never lost. It fails the test
// if IDLE is rejected or no continuation arrives within c.Timeout.
func (c *RawConn) Idle() {
	c.t.Helper()
	if c.idleTag != "" {
		c.t.Fatalf("testkit: Idle while %s IDLE is running", c.idleTag)
	}
	tag := c.nextTag()
	c.Send(tag + " IDLE")
	var early []string
	for {
		line, err := c.readRaw(c.Timeout)
		if err != nil {
			c.t.Fatalf("testkit: %s IDLE: %v (untagged so far: %q)", tag, err, early)
		}
		if strings.HasPrefix(line, "+") {
			break
		}
		if strings.HasPrefix(line, tag+" ") {
			c.t.Fatalf("testkit: %s IDLE rejected: %s", tag, line)
		}
		early = append(early, line)
	}
	c.queued = append(c.queued, early...)
	c.idleTag = tag
}

// readRaw is ReadLine that bypasses the queue of lines read ahead.
func (c *RawConn) readRaw(timeout time.Duration) (string, error) {
	line, err := c.readConn(timeout)
	if err == nil {
		c.check(line)
	}
	return line, err
}

// Done ends the running IDLE: it sends DONE and returns the untagged lines
// that arrive before IDLE's tagged completion, including lines sent during
// IDLE that were not read yet. It fails the test unless the completion is
// OK within c.Timeout.
func (c *RawConn) Done() []string {
	c.t.Helper()
	if c.idleTag == "" {
		c.t.Fatalf("testkit: Done without Idle")
	}
	tag := c.idleTag
	c.idleTag = ""
	c.Send("DONE")
	var untagged []string
	for {
		line, err := c.ReadLine(c.Timeout)
		if err != nil {
			c.t.Fatalf("testkit: %s IDLE DONE: %v (untagged so far: %q)", tag, err, untagged)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			if !strings.HasPrefix(rest, "OK") {
				c.t.Fatalf("testkit: %s IDLE DONE: %s", tag, rest)
			}
			return untagged
		}
		untagged = append(untagged, line)
	}
}

// DonePipelined ends the running IDLE the way a pipelining client does: it
// writes DONE and line (a complete tagged command, without CRLF) in one
// write and returns the IDLE command's tag. It reads nothing; the test
// reads IDLE's completion and line's response (Expect). It fails the test
// without a running IDLE or on an I/O error.
func (c *RawConn) DonePipelined(line string) (idleTag string) {
	c.t.Helper()
	if c.idleTag == "" {
		c.t.Fatalf("testkit: DonePipelined without Idle")
	}
	idleTag = c.idleTag
	c.idleTag = ""
	c.Send("DONE\r\n" + line)
	return idleTag
}

// Expect reads len(want) lines and fails t unless they are exactly want, in
// order. All of them must arrive within timeout. Expect does not look
// beyond the wanted lines: follow it with ExpectNothing to assert that
// nothing else comes.
func (c *RawConn) Expect(t testing.TB, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []string
	for i := range want {
		line, err := c.ReadLine(time.Until(deadline))
		if err != nil {
			t.Fatalf("testkit: waiting for line %d of %d: %v\n got: %s\nwant: %s",
				i+1, len(want), err, fmtLines(got), fmtLines(want))
		}
		got = append(got, line)
		if line != want[i] {
			t.Fatalf("testkit: line %d differs\n got: %s\nwant: %s", i+1, fmtLines(got), fmtLines(want))
		}
	}
}

// ExpectNothing fails t if the server sends anything within d (or the
// connection breaks). A line that started but did not end within d counts
// as something.
func (c *RawConn) ExpectNothing(t testing.TB, d time.Duration) {
	t.Helper()
	line, err := c.ReadLine(d)
	switch {
	case err == nil:
		t.Fatalf("testkit: unexpected line %q", line)
	case !errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("testkit: expected silence: %v", err)
	case c.r.Partial() != "":
		t.Fatalf("testkit: unexpected partial line %q", c.r.Partial())
	}
}

// Close closes the connection without LOGOUT. Calling it is optional; the
// test's cleanup closes the connection anyway.
func (c *RawConn) Close() error {
	return c.conn.Close()
}

func (c *RawConn) nextTag() string {
	c.tag++
	return "T" + strconv.Itoa(c.tag)
}

// Quote returns s as an IMAP quoted string.
func Quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// fmtLines formats lines one per row for failure messages.
func fmtLines(lines []string) string {
	if len(lines) == 0 {
		return "(none)"
	}
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\n      ")
		}
		fmt.Fprintf(&b, "%q", l)
	}
	return b.String()
}
