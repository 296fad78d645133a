// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of what a NOTIFY session's byte stream holds when the
// module writes to it at any time: COMPRESS=DEFLATE under concurrent
// pushes, and NOTIFICATIONOVERFLOW for a client that stops reading.

import (
	"bufio"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/registry"
)

// compressRounds is how many connections TestNotify5465CompressUnderPushes
// switches to DEFLATE.
const compressRounds = 150

// busyAccount makes changes to user's mailboxes in a tight loop (create,
// append, delete a folder) from its own connection until the test ends,
// so that every NOTIFY session on personal is pushed lines all the time.
// Errors (SQLite's "database is locked") are ignored: the load is what
// counts.
func busyAccount(t *testing.T, srv *testkit.Server) {
	t.Helper()
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if p := recover(); p != nil {
				t.Errorf("busy account: panic: %v", p)
			}
		}()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("Busy%d", i%4)
			a.Create(name, nil).Wait()
			appendOnce(a, name, testkit.Message(name))
			appendOnce(a, "INBOX", testkit.Message("inbox"))
			a.Delete(name).Wait()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}

// deflateClient is one IMAP connection that switches to COMPRESS=DEFLATE.
type deflateClient struct {
	conn net.Conn
	r    *bufio.Reader // the raw stream, then the inflated one
	w    io.Writer     // the raw stream, then zw
	zw   *flate.Writer
	tag  int
}

func (c *deflateClient) send(line string) error {
	c.conn.SetWriteDeadline(time.Now().Add(expectWait))
	if _, err := io.WriteString(c.w, line+"\r\n"); err != nil {
		return err
	}
	if c.zw != nil {
		return c.zw.Flush()
	}
	return nil
}

// readLine reads one line (without CRLF); lines here never carry literals.
func (c *deflateClient) readLine(timeout time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		return line, err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("line without CRLF: %q", line)
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

// cmd sends cmd and returns the untagged lines and the tagged response
// (without the tag); every untagged line must be IMAP syntax.
func (c *deflateClient) cmd(cmd string) (untagged []string, tagged string, err error) {
	c.tag++
	tag := fmt.Sprintf("Z%d", c.tag)
	if err := c.send(tag + " " + cmd); err != nil {
		return nil, "", err
	}
	for {
		line, err := c.readLine(expectWait)
		if err != nil {
			return untagged, "", fmt.Errorf("%s %s: %w (untagged so far: %q)", tag, cmd, err, untagged)
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			return untagged, rest, nil
		}
		if err := imapsyntax.CheckResponse([]byte(line + "\r\n")); err != nil {
			return untagged, "", fmt.Errorf("%s %s: %w", tag, cmd, err)
		}
		untagged = append(untagged, line)
	}
}

// compressRound logs in, asks for personal events, switches to DEFLATE
// while lines are pushed and reads everything after the tagged OK through
// an inflater: a NOOP's response and the pushes until a short silence.
// It returns the number of lines read compressed.
func compressRound(addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, expectWait)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	c := &deflateClient{conn: conn, r: bufio.NewReader(conn), w: conn}
	if g, err := c.readLine(expectWait); err != nil || !strings.HasPrefix(g, "* OK") {
		return 0, fmt.Errorf("greeting %q: %v", g, err)
	}
	if _, tagged, err := c.cmd("LOGIN " + testkit.Quote(user) + " " + testkit.Quote(pass)); err != nil || !strings.HasPrefix(tagged, "OK") {
		return 0, fmt.Errorf("LOGIN: %s %v", tagged, err)
	}
	if _, tagged, err := c.cmd("NOTIFY SET (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))"); err != nil || tagged != "OK NOTIFY completed" {
		return 0, fmt.Errorf("NOTIFY: %s %v", tagged, err)
	}
	if _, tagged, err := c.cmd("COMPRESS DEFLATE"); err != nil || !strings.HasPrefix(tagged, "OK") {
		return 0, fmt.Errorf("COMPRESS: %s %v", tagged, err)
	}
	// Everything after the tagged OK is compressed: c.r may hold its
	// first bytes already.
	c.r = bufio.NewReader(flate.NewReader(c.r))
	c.zw, _ = flate.NewWriter(conn, flate.DefaultCompression)
	c.w = c.zw
	untagged, tagged, err := c.cmd("NOOP")
	if err != nil || !strings.HasPrefix(tagged, "OK") {
		return len(untagged), fmt.Errorf("NOOP after COMPRESS: %s %v", tagged, err)
	}
	n := len(untagged) + 1
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		line, err := c.readLine(30 * time.Millisecond)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("after NOOP: %w", err)
		}
		if err := imapsyntax.CheckResponse([]byte(line + "\r\n")); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// TestNotify5465CompressUnderPushes: a NOTIFY session that sends COMPRESS
// DEFLATE while the module pushes lines to it gets a clean stream: the
// lines before the tagged OK uncompressed, everything after it inflates
// to IMAP lines. Repeated on new connections to catch the race with a push
// under way.
func TestNotify5465CompressUnderPushes(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	busyAccount(t, srv)
	corrupt, lines := 0, 0
	for i := 0; i < compressRounds; i++ {
		n, err := compressRound(srv.Addr("imap"))
		lines += n
		if err != nil {
			corrupt++
			if corrupt <= 3 {
				t.Errorf("round %d: %v", i, err)
			}
		}
	}
	if corrupt > 0 {
		t.Errorf("%d of %d compressed streams were corrupt", corrupt, compressRounds)
	}
	t.Logf("%d rounds, %d lines read compressed", compressRounds, lines)
	if lines <= compressRounds {
		t.Errorf("only %d lines read compressed in %d rounds: no push came after COMPRESS", lines, compressRounds)
	}
}

// overflowLine is what a NOTIFY client that lost notifications reads.
const overflowLine = "* OK [NOTIFICATIONOVERFLOW] notifications were lost; send NOTIFY SET again"

// TestNotify5465Overflow: a NOTIFY client that stops reading while more
// than registry.QueueLimit changes happen reads, when it reads again, the
// lines that were on their way, then NOTIFICATIONOVERFLOW, and then
// nothing (as after NOTIFY NONE) until it sends NOTIFY SET again, which
// works.
func TestNotify5465Overflow(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	// Long lines, so that the changes' LIST lines fill the server's socket
	// buffer (the kernel grows it to megabytes) and the queue behind it.
	toggled := "Toggle" + strings.Repeat("x", 3000)
	mustOK(t, "CREATE", a.Create(toggled, nil).Wait())
	s := dialStalled(t, srv.Addr("imap"), user, "INBOX")
	if _, tagged := s.cmd(t, "NOTIFY SET (personal (SubscriptionChange))"); tagged != "OK NOTIFY completed" {
		t.Fatalf("NOTIFY: %s", tagged)
	}
	d := ""
	toggle := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if i%2 == 0 {
				mustOK(t, "UNSUBSCRIBE", a.Unsubscribe(toggled).Wait())
			} else {
				mustOK(t, "SUBSCRIBE", a.Subscribe(toggled).Wait())
			}
		}
	}
	const changes = 4 * registry.QueueLimit
	toggle(changes)

	var got []string
	for {
		line, err := s.readLine(500 * time.Millisecond)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("after %d lines: %v", len(got), err)
		}
		testkit.CheckModuleLine(t, line)
		got = append(got, line)
	}
	if len(got) == 0 || got[len(got)-1] != overflowLine {
		t.Fatalf("%d lines, want NOTIFICATIONOVERFLOW last; the last one: %.80q", len(got), got[len(got)-1])
	}
	for i, l := range got[:len(got)-1] {
		if !strings.HasPrefix(l, `* LIST (\HasNoChildren`) || !strings.HasSuffix(l, ` "`+toggled+`"`) {
			t.Fatalf("line %d before the overflow: %.80q", i+1, l)
		}
		if d == "" {
			d = strings.Fields(strings.SplitN(l, ") ", 2)[1])[0]
		}
	}
	if len(got) > changes {
		t.Errorf("%d lines for %d changes and the overflow", len(got), changes)
	}
	toggle(2)
	if line, err := s.readLine(quietWait); err == nil {
		t.Fatalf("after NOTIFICATIONOVERFLOW: %.80q", line)
	}
	if untagged, tagged := s.cmd(t, "NOTIFY SET (personal (SubscriptionChange))"); len(untagged) != 0 || tagged != "OK NOTIFY completed" {
		t.Fatalf("NOTIFY SET again: %q %s", untagged, tagged)
	}
	toggle(1) // unsubscribes: it was subscribed after an even number
	if line, err := s.readLine(expectWait); err != nil || line != fmt.Sprintf(`* LIST (\HasNoChildren) %s "%s"`, d, toggled) {
		t.Fatalf("after NOTIFY SET again: %.80q %v", line, err)
	}
}
