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
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/server"
	messmemory "github.com/foxcpp/go-imap-mess/memory"

	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
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

// TestFetchLineMatchesStock: FetchLine carries what the server answers to a
// UID FETCH of the same items, for the message data the store returns, and
// differs from that answer only where the answer is not RFC 3501 syntax.
// Both lines are parsed with go-imap v1's reader (the parser maddy's stack
// is written against) and must give the same message, except for the
// Content-Transfer-Encoding the stock line leaves NIL and FetchLine writes
// as RFC 2045's default "7BIT"; FetchLine's line passes the strict checker
// and the stock line fails it (on body-fld-param "()"), which is why
// storage.notify writes BODYSTRUCTURE itself.
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
		line := FetchLine(msg.SeqNum, FetchDataOf(msg), items)
		if len(got) != 1 {
			t.Fatalf("items %v: server sent %q", cfg, got)
		}
		if err := imapsyntax.CheckResponse(line); err != nil {
			t.Fatalf("items %v: FetchLine: %v", cfg, err)
		}
		if err := imapsyntax.CheckResponse([]byte(got[0])); err == nil || !strings.Contains(err.Error(), "body-fld-param") {
			t.Fatalf("items %v: the stock line %q: %v; want the body-fld-param \"()\" error", cfg, got[0], err)
		}
		stock, ours := parseFetchV1(t, got[0]), parseFetchV1(t, string(line))
		defaultEncoding(stock.BodyStructure)
		if !reflect.DeepEqual(stock, ours) {
			t.Fatalf("items %v: server sent %q, FetchLine gives %q: parsed\n%#v\n%#v", cfg, got[0], line, stock, ours)
		}
		if !strings.HasPrefix(string(line), "* 1 FETCH (UID 6 ") {
			t.Fatalf("items %v: FetchLine gives %q", cfg, line)
		}
	}
}

// parseFetchV1 parses an untagged FETCH line with go-imap v1's reader.
func parseFetchV1(t *testing.T, line string) *imap.Message {
	t.Helper()
	fields, err := imap.NewReader(bufio.NewReader(strings.NewReader(line))).ReadLine()
	if err != nil || len(fields) != 4 {
		t.Fatalf("go-imap v1 reads %q as %v, %v", line, fields, err)
	}
	att, ok := fields[3].([]interface{})
	if !ok {
		t.Fatalf("go-imap v1 reads %q: no msg-att list in %v", line, fields)
	}
	msg := &imap.Message{}
	if err := msg.Parse(att); err != nil {
		t.Fatalf("go-imap v1 parses %q: %v", line, err)
	}
	msg.Items = nil // which items came, and in what order, is compared as bytes elsewhere
	return msg
}

// defaultEncoding sets RFC 2045's default Content-Transfer-Encoding where
// bs (and its parts) has none, as go-imap v1 parses "7BIT".
func defaultEncoding(bs *imap.BodyStructure) {
	if bs == nil {
		return
	}
	if bs.Encoding == "" && !strings.EqualFold(bs.MIMEType, "multipart") {
		bs.Encoding = "7bit"
	}
	for _, p := range bs.Parts {
		defaultEncoding(p)
	}
	defaultEncoding(bs.BodyStructure)
}
