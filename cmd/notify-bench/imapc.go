// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/imapwire"
)

// line is one response line from the server and the moment the reader had
// all of it, literals included (right after its last byte came off the
// socket).
type line struct {
	text string
	at   time.Time
}

// imapConn is a raw IMAP connection. One goroutine reads the socket through
// bufio and time-stamps every line as soon as it is complete (before any
// channel hop), then hands it to lines. Commands are written by the caller's
// goroutine; an imapConn is driven by one goroutine at a time.
type imapConn struct {
	name  string
	conn  net.Conn
	lines chan line
	// dropped counts lines the reader could not hand on because lines was
	// full (only connections made with a small buffer drop).
	dropped atomic.Int64
	err     atomic.Pointer[error]
	tag     int
	idleTag string
}

// ioTimeout bounds every wait for a command's response.
const ioTimeout = 30 * time.Second

// dialIMAP connects to addr and reads the greeting. buf is the capacity of
// the line channel; when it is full the reader drops lines (and counts them)
// rather than stall the socket.
func dialIMAP(name, addr string, buf int) (*imapConn, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", name, addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := &imapConn{name: name, conn: nc, lines: make(chan line, buf)}
	go c.read()
	g, err := c.next(ioTimeout)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: greeting: %w", name, err)
	}
	if !strings.HasPrefix(g.text, "* OK") {
		nc.Close()
		return nil, fmt.Errorf("%s: greeting %q", name, g.text)
	}
	return c, nil
}

// read is the connection's reader goroutine: it splits the socket's bytes
// into lines (literals included, imapwire.LineReader), stamps each line the
// moment Next returns it complete and hands it on without waiting. It ends
// at the first read error, which next then reports.
func (c *imapConn) read() {
	r := imapwire.NewLineReader(bufio.NewReaderSize(c.conn, 4096))
	for {
		text, err := r.Next()
		if err != nil {
			c.err.Store(&err)
			close(c.lines)
			return
		}
		now := time.Now()
		select {
		case c.lines <- line{text: text, at: now}:
		default:
			c.dropped.Add(1)
		}
	}
}

// next returns the next line, waiting at most d.
func (c *imapConn) next(d time.Duration) (line, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			if e := c.err.Load(); e != nil {
				return line{}, fmt.Errorf("%s: connection: %w", c.name, *e)
			}
			return line{}, fmt.Errorf("%s: connection closed", c.name)
		}
		return l, nil
	case <-t.C:
		return line{}, fmt.Errorf("%s: no line within %v", c.name, d)
	}
}

// drain discards the lines already read and returns how many there were.
func (c *imapConn) drain() int {
	n := 0
	for {
		select {
		case _, ok := <-c.lines:
			if !ok {
				return n
			}
			n++
		default:
			return n
		}
	}
}

func (c *imapConn) nextTag() string {
	c.tag++
	return "A" + strconv.Itoa(c.tag)
}

// send writes raw bytes and returns the time just before the write.
func (c *imapConn) send(b []byte) (time.Time, error) {
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	at := time.Now()
	if _, err := c.conn.Write(b); err != nil {
		return at, fmt.Errorf("%s: write: %w", c.name, err)
	}
	return at, nil
}

// result is a command's response.
type result struct {
	untagged []line
	tagged   line // without the tag
	sent     time.Time
}

func (r result) ok() bool { return strings.HasPrefix(r.tagged.text, "OK") }

// cmd sends "TAG command" (command may carry LITERAL+ literals) and waits
// for its tagged response.
func (c *imapConn) cmd(command string) (result, error) {
	tag := c.nextTag()
	sent, err := c.send([]byte(tag + " " + command + "\r\n"))
	if err != nil {
		return result{}, err
	}
	return c.wait(tag, sent)
}

func (c *imapConn) wait(tag string, sent time.Time) (result, error) {
	return c.waitTimeout(tag, sent, ioTimeout)
}

// waitTimeout waits for the tagged response of tag, at most d for each line.
func (c *imapConn) waitTimeout(tag string, sent time.Time, d time.Duration) (result, error) {
	res := result{sent: sent}
	for {
		l, err := c.next(d)
		if err != nil {
			return res, fmt.Errorf("%s: waiting for %s: %w", c.name, tag, err)
		}
		if rest, ok := strings.CutPrefix(l.text, tag+" "); ok {
			res.tagged = line{text: rest, at: l.at}
			return res, nil
		}
		res.untagged = append(res.untagged, l)
	}
}

// mustOK runs command and fails unless the answer is OK.
func (c *imapConn) mustOK(command string) (result, error) {
	res, err := c.cmd(command)
	if err != nil {
		return res, err
	}
	if !res.ok() {
		return res, fmt.Errorf("%s: %s: %s", c.name, firstWord(command), res.tagged.text)
	}
	return res, nil
}

func firstWord(s string) string {
	if i := strings.IndexByte(s, ' '); i > 0 {
		return s[:i]
	}
	return s
}

func (c *imapConn) login(user, pass string) error {
	_, err := c.mustOK("LOGIN " + quote(user) + " " + quote(pass))
	return err
}

// appendCmd is the APPEND command text for msg with a LITERAL+ literal.
func appendCmd(mbox, msg string) string {
	return fmt.Sprintf("APPEND %s {%d+}\r\n%s", quote(mbox), len(msg), msg)
}

// appendMsg appends msg to mbox. It reports the NO/BAD text instead of an
// error when the server refuses (SQLite's "database is locked").
func (c *imapConn) appendMsg(mbox, msg string) (result, error) {
	return c.cmd(appendCmd(mbox, msg))
}

// idle starts IDLE and waits for the continuation request.
func (c *imapConn) idle() error {
	tag := c.nextTag()
	if _, err := c.send([]byte(tag + " IDLE\r\n")); err != nil {
		return err
	}
	for {
		l, err := c.next(ioTimeout)
		if err != nil {
			return fmt.Errorf("%s: IDLE: %w", c.name, err)
		}
		if strings.HasPrefix(l.text, "+") {
			c.idleTag = tag
			return nil
		}
		if strings.HasPrefix(l.text, tag+" ") {
			return fmt.Errorf("%s: IDLE refused: %s", c.name, l.text)
		}
	}
}

// done ends IDLE and returns the lines that came before its tagged OK.
func (c *imapConn) done() ([]line, error) {
	tag := c.idleTag
	c.idleTag = ""
	sent, err := c.send([]byte("DONE\r\n"))
	if err != nil {
		return nil, err
	}
	res, err := c.wait(tag, sent)
	return res.untagged, err
}

func (c *imapConn) close() {
	c.conn.Close()
}

// quote returns s as an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// message returns a small RFC 5322 message (about 250 bytes).
func message(subject string) string {
	return "From: Bench Sender <sender@example.org>\r\n" +
		"To: Bench Recipient <user@maddy.test>\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n" +
		"Message-ID: <" + subject + "@notify-bench>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" +
		"A small message for the benchmark.\r\n"
}
