// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

// A strict parser for the lines mapping produces: go-imap v2's imapclient,
// driven over a net.Pipe by a scripted server that answers every command with
// the lines under test followed by a tagged OK.
//
// imapclient beta.8 hands unilateral EXISTS/EXPUNGE/FETCH to
// Options.UnilateralDataHandler, but it silently drops a STATUS or LIST that
// no pending command asked for (handleStatus/handleList only look for a
// pending StatusCommand/ListCommand). So LIST lines are parsed as the answer
// to a LIST command, STATUS lines as the answer to a STATUS command for the
// expected mailbox (the client only accepts it when the decoded name equals
// that mailbox), and FETCH lines as unilateral data during a NOOP.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	imapv2 "github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
)

const wireTimeout = 10 * time.Second

// scriptedClient connects an imapclient.Client to a goroutine that answers
// every command with lines (then "<tag> OK done"), and LOGOUT with BYE.
func scriptedClient(t testing.TB, lines [][]byte, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	t.Helper()
	srv, cli := net.Pipe()
	deadline := time.Now().Add(wireTimeout)
	_ = srv.SetDeadline(deadline)
	_ = cli.SetDeadline(deadline)

	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.Close()
		serveScript(srv, lines)
	}()

	c := imapclient.New(cli, &imapclient.Options{UnilateralDataHandler: h})
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

var literalRe = regexp.MustCompile(`\{(\d+)(\+?)\}\r\n$`)

func serveScript(conn net.Conn, lines [][]byte) {
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("* OK [CAPABILITY IMAP4rev1 LIST-EXTENDED] scripted server ready\r\n")); err != nil {
		return
	}
	for {
		cmd, err := readCommand(conn, r)
		if err != nil {
			return
		}
		fields := strings.Fields(cmd)
		if len(fields) < 2 {
			return
		}
		tag, name := fields[0], strings.ToUpper(fields[1])
		var out []byte
		switch name {
		case "LOGOUT":
			out = []byte("* BYE bye\r\n" + tag + " OK LOGOUT done\r\n")
		case "CAPABILITY":
			out = []byte("* CAPABILITY IMAP4rev1 LIST-EXTENDED\r\n" + tag + " OK done\r\n")
		default:
			for _, l := range lines {
				out = append(out, l...)
			}
			out = append(out, tag+" OK done\r\n"...)
		}
		if _, err := conn.Write(out); err != nil {
			return
		}
	}
}

// readCommand reads one command, following literals (answering "+" to
// synchronising ones).
func readCommand(conn net.Conn, r *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		sb.WriteString(line)
		m := literalRe.FindStringSubmatch(line)
		if m == nil {
			return sb.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		if m[2] == "" {
			if _, err := conn.Write([]byte("+ go on\r\n")); err != nil {
				return "", err
			}
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		sb.Write(buf)
	}
}

// strict fails t unless line is RFC 3501 section 9 syntax by
// internal/imapsyntax: the plain grammar (RFC 3501 LIST, what a client that
// negotiated nothing parses) when plain, else the full one (LIST with
// RFC 5258 extended data such as OLDNAME).
func strict(t testing.TB, line []byte, plain bool) {
	t.Helper()
	if err := imapsyntax.Check(line, imapsyntax.Options{Plain: plain}); err != nil {
		t.Fatalf("not RFC 3501 syntax: %v", err)
	}
}

// parseListV2 parses a LIST line with go-imap v2.
func parseListV2(t testing.TB, line []byte) (*imapv2.ListData, error) {
	t.Helper()
	c := scriptedClient(t, [][]byte{line}, nil)
	data, err := c.List("", "*", nil).Collect()
	if err != nil {
		return nil, err
	}
	if len(data) != 1 {
		return nil, fmt.Errorf("LIST gave %d mailboxes, want 1", len(data))
	}
	return data[0], nil
}

// parseStatusV2 parses a STATUS line with go-imap v2, as the answer to a
// STATUS command for want (the UTF-8 name the line must decode to).
func parseStatusV2(t testing.TB, want string, line []byte) (*imapv2.StatusData, error) {
	t.Helper()
	if IsInbox(want) {
		want = "INBOX" // imapclient decodes INBOX in any case as "INBOX"
	}
	c := scriptedClient(t, [][]byte{line}, nil)
	data, err := c.Status(want, &imapv2.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		return nil, err
	}
	if data.Mailbox != want {
		return nil, fmt.Errorf("STATUS line was not matched to mailbox %q: it did not decode to that name (got %+v)", want, data)
	}
	return data, nil
}

// parseFetchV2 parses a FETCH line with go-imap v2, as unilateral data.
func parseFetchV2(t testing.TB, line []byte) (*imapclient.FetchMessageBuffer, error) {
	t.Helper()
	type result struct {
		buf *imapclient.FetchMessageBuffer
		err error
	}
	got := make(chan result, 4)
	h := &imapclient.UnilateralDataHandler{
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			got <- result{buf, err}
		},
	}
	c := scriptedClient(t, [][]byte{line}, h)
	if err := c.Noop().Wait(); err != nil {
		return nil, err
	}
	select {
	case r := <-got:
		return r.buf, r.err
	case <-time.After(wireTimeout):
		return nil, errors.New("no unilateral FETCH delivered")
	}
}

// decodedName is what a strict client shows for the UTF-8 name: the name
// itself, or "INBOX" for any case of INBOX.
func decodedName(name string) string {
	if IsInbox(name) {
		return "INBOX"
	}
	return name
}

func TestWireListV2(t *testing.T) {
	tests := []struct {
		name      string
		line      []byte
		wantAttrs []imapv2.MailboxAttr
		wantDelim rune
		wantBox   string
		wantOld   string
	}{
		{"plain", ListLine([]string{`\HasNoChildren`}, "/", "box", ""), []imapv2.MailboxAttr{imapv2.MailboxAttrHasNoChildren}, '/', "box", ""},
		{"NIL delimiter", ListLine(nil, "", "box", ""), nil, 0, "box", ""},
		{"non-ASCII", ListLine(nil, ".", "Entwürfe", ""), nil, '.', "Entwürfe", ""},
		{"quotes and backslashes", ListLine(nil, "/", `a "b" \c`, ""), nil, '/', `a "b" \c`, ""},
		{"ampersand", ListLine(nil, "/", "R&D", ""), nil, '/', "R&D", ""},
		{"inbox lower case", ListLine(nil, "/", "inbox", ""), nil, '/', "INBOX", ""},
		{"delete", ListLine([]string{AttrNonExistent}, "/", "Trash/Old", ""), []imapv2.MailboxAttr{imapv2.MailboxAttrNonExistent}, '/', "Trash/Old", ""},
		{"subscribed", ListLine(SubscriptionAttrs([]string{`\HasChildren`}, true), "/", "Lists", ""), []imapv2.MailboxAttr{imapv2.MailboxAttrHasChildren, imapv2.MailboxAttrSubscribed}, '/', "Lists", ""},
		{"oldname", ListLine(nil, "/", "Neu", "Alt"), nil, '/', "Neu", "Alt"},
		{"oldname non-ASCII both", ListLine([]string{`\Sent`}, "/", "Gesendete Objekte", "Entwürfe & 日本"), []imapv2.MailboxAttr{imapv2.MailboxAttrSent}, '/', "Gesendete Objekte", "Entwürfe & 日本"},
		{"quote delimiter", ListLine(nil, `"`, "a", ""), nil, '"', "a", ""},
		{"backslash delimiter", ListLine(nil, `\`, "a", ""), nil, '\\', "a", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			strict(t, tt.line, tt.wantOld == "")
			d, err := parseListV2(t, tt.line)
			if err != nil {
				t.Fatalf("go-imap v2 cannot parse %q: %v", tt.line, err)
			}
			if d.Mailbox != tt.wantBox || d.OldName != tt.wantOld || d.Delim != tt.wantDelim || fmt.Sprint(d.Attrs) != fmt.Sprint(tt.wantAttrs) {
				t.Fatalf("%q parsed as attrs=%v delim=%q mailbox=%q old=%q; want attrs=%v delim=%q mailbox=%q old=%q",
					tt.line, d.Attrs, d.Delim, d.Mailbox, d.OldName, tt.wantAttrs, tt.wantDelim, tt.wantBox, tt.wantOld)
			}
		})
	}
}

func TestWireStatusV2(t *testing.T) {
	items, err := ParseStatusItems([]string{"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})
	if err != nil {
		t.Fatal(err)
	}
	st := Status{Messages: 3, Recent: 1, UIDNext: 9, UIDValidity: 4242, Unseen: 2}
	for _, name := range []string{"INBOX", "Inbox", "box", "Entwürfe", "R&D", `a "b" \c`, "日本語/メール", "😀"} {
		t.Run(name, func(t *testing.T) {
			line := StatusLine(name, items, st)
			strict(t, line, true)
			d, err := parseStatusV2(t, name, line)
			if err != nil {
				t.Fatalf("go-imap v2 on %q: %v", line, err)
			}
			if d.NumMessages == nil || *d.NumMessages != 3 || d.UIDNext != 9 || d.UIDValidity != 4242 || d.NumUnseen == nil || *d.NumUnseen != 2 {
				t.Fatalf("%q parsed as %+v", line, d)
			}
		})
	}
}

func TestWireFetchV2(t *testing.T) {
	date := time.Date(2024, 5, 17, 10, 11, 12, 0, time.FixedZone("", 2*3600))
	d := FetchData{
		UID:           9,
		Flags:         []string{`\Seen`, "$Label1"},
		BodyStructure: testBodyStructure(),
		InternalDate:  date,
		Size:          4321,
	}
	items, err := ParseFetchItems([]string{"FLAGS", "BODYSTRUCTURE", "INTERNALDATE", "RFC822.SIZE"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		line []byte
	}{
		{"FetchLine", FetchLine(3, d, items)},
		{"FlagsFetchLine", FlagsFetchLine(3, 9, d.Flags)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			strict(t, tt.line, true)
			m, err := parseFetchV2(t, tt.line)
			if err != nil {
				t.Fatalf("go-imap v2 cannot parse %q: %v", tt.line, err)
			}
			if m.SeqNum != 3 || m.UID != 9 || fmt.Sprint(m.Flags) != `[\Seen $Label1]` {
				t.Fatalf("%q parsed as seq=%d uid=%d flags=%v", tt.line, m.SeqNum, m.UID, m.Flags)
			}
			if tt.name != "FetchLine" {
				return
			}
			if !m.InternalDate.Equal(date) || m.RFC822Size != 4321 {
				t.Fatalf("%q parsed as date=%v size=%d", tt.line, m.InternalDate, m.RFC822Size)
			}
			mp, ok := m.BodyStructure.(*imapv2.BodyStructureMultiPart)
			if !ok || len(mp.Children) != 2 || mp.Subtype != "mixed" {
				t.Fatalf("%q: BODYSTRUCTURE parsed as %#v", tt.line, m.BodyStructure)
			}
			p2, ok := mp.Children[1].(*imapv2.BodyStructureSinglePart)
			if !ok || p2.Params["name"] != "trip.txt" || p2.Encoding != "base64" || p2.Size != 4554 {
				t.Fatalf("%q: second part parsed as %#v", tt.line, mp.Children[1])
			}
		})
	}
}
