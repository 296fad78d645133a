// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

// Byte-for-byte comparison with what stock maddy's IMAP stack writes: the
// go-imap v1 fork's server with go-imap-mess doing the update dispatch (its
// in-memory backend uses the same MailboxHandle code as go-imap-sql), over
// real connections.

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/server"
	messmemory "github.com/foxcpp/go-imap-mess/memory"
)

type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(wireTimeout))
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
	if greeting := c.readResp(); !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting %q", greeting)
	}
	return c
}

var respLiteralRe = regexp.MustCompile(`\{(\d+)\}\r\n$`)

// readResp reads one response, with its literals, as raw bytes.
func (c *rawConn) readResp() string {
	c.t.Helper()
	var sb strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("read: %v (so far %q)", err, sb.String())
		}
		sb.WriteString(line)
		m := respLiteralRe.FindStringSubmatch(line)
		if m == nil {
			return sb.String()
		}
		n, _ := strconv.Atoi(m[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatal(err)
		}
		sb.Write(buf)
	}
}

// cmd sends "tag command" and returns the untagged responses before the
// tagged OK.
func (c *rawConn) cmd(tag, command string) []string {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, command); err != nil {
		c.t.Fatal(err)
	}
	var untagged []string
	for {
		resp := c.readResp()
		if strings.HasPrefix(resp, tag+" ") {
			if !strings.HasPrefix(resp, tag+" OK") {
				c.t.Fatalf("%s %s: %q", tag, command, resp)
			}
			return untagged
		}
		untagged = append(untagged, resp)
	}
}

func startStockServer(t *testing.T) (addr string, be *messmemory.Backend) {
	t.Helper()
	be = messmemory.New()
	s := server.New(be)
	s.AllowInsecureAuth = true
	s.ErrorLog = log.New(io.Discard, "", 0) // "use of closed network connection" at cleanup
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String(), be
}

// TestFlagsFetchLineMatchesStock: the FETCH a session gets when another
// session of the same user changes flags in its selected mailbox is exactly
// FlagsFetchLine.
func TestFlagsFetchLineMatchesStock(t *testing.T) {
	addr, _ := startStockServer(t)
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.cmd("a1", "LOGIN username password")
	a.cmd("a2", "SELECT INBOX")
	b.cmd("b1", "LOGIN username password")
	b.cmd("b2", "SELECT INBOX")
	b.cmd("b3", `STORE 1 +FLAGS ($Label1 \Flagged)`)

	got := a.cmd("a3", "NOOP")
	// The memory backend's only message has UID 6 and \Seen. go-imap v1's
	// server canonicalises the STORE arguments (imap.CanonicalFlag), so the
	// store holds the keyword in lower case.
	want := string(FlagsFetchLine(1, 6, []string{`\Seen`, "$label1", `\Flagged`}))
	if len(got) != 1 || got[0] != want {
		t.Fatalf("stock server sent %q after STORE, FlagsFetchLine gives %q", got, want)
	}
	t.Logf("stock flag update: %q", got[0])
}

// TestFetchLineMatchesStock: FetchLine equals the server's answer to a UID
// FETCH of the same items, for the message data the store returns.
func TestFetchLineMatchesStock(t *testing.T) {
	addr, be := startStockServer(t)
	a := dialRaw(t, addr)
	a.cmd("a1", "LOGIN username password")
	a.cmd("a2", "SELECT INBOX")

	user, err := be.Login(nil, "username", "password")
	if err != nil {
		t.Fatal(err)
	}
	_, mbox, err := user.GetMailbox("INBOX", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mbox.Close()

	for _, cfg := range [][]string{
		{"FLAGS", "BODYSTRUCTURE"},
		{"BODYSTRUCTURE", "FLAGS"},
		{"ENVELOPE", "INTERNALDATE", "RFC822.SIZE", "FLAGS", "BODYSTRUCTURE"},
	} {
		items, err := ParseFetchItems(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, it := range items.Request() {
			names = append(names, string(it))
		}
		got := a.cmd("a3", "UID FETCH 6 ("+strings.Join(names, " ")+")")

		ch := make(chan *imap.Message, 1)
		seq := new(imap.SeqSet)
		seq.AddNum(6)
		if err := mbox.ListMessages(true, seq, items.Request(), ch); err != nil {
			t.Fatal(err)
		}
		msg := <-ch
		want := string(FetchLine(msg.SeqNum, FetchDataOf(msg), items))
		if len(got) != 1 || got[0] != want {
			t.Fatalf("items %v: server sent %q, FetchLine gives %q", cfg, got, want)
		}
	}
}
