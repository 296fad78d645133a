// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of the notifications themselves: each test starts its own
// maddy whose IMAP and SMTP endpoints use a storage.notify block, drives one
// account from several sessions (go-imap v2 clients, raw IMAP connections,
// SMTP) and holds the session that listens (in IDLE or at NOOP) to the exact
// lines of the mapping table in docs/notifications.md, in the wire forms
// package mapping produces. Expected values come from the store itself where the store
// decides them (hierarchy delimiter, BODYSTRUCTURE, flags, STATUS values
// after a burst), so the tests check the wrapper against the store, not
// against mapping.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	imapv1 "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// user2 is a second account on the same server (account isolation).
const user2 = "user2@maddy.test"

// notifyEndpoints are the IMAP and SMTP endpoints of every configuration
// written by notifyConfig.
const notifyEndpoints = `
imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &notified_mailboxes
}

smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &notified_mailboxes
}
`

// notifyConfig returns a maddy.conf body with storage.notify
// notified_mailboxes wrapping storage.imapsql local_mailboxes, the given
// directives (one per string) added to the notify block, and both endpoints
// on the notify block. The draft's whole mapping is what most tests here
// hold plain clients to: the block has `plain_clients draft` unless a
// directive names plain_clients itself.
func notifyConfig(directives ...string) string {
	plain := "plain_clients draft"
	for _, d := range directives {
		if strings.HasPrefix(d, "plain_clients") {
			plain = ""
		}
	}
	return notifyConfigPlain(plain, directives...)
}

// notifyConfigPlain is notifyConfig with plain as the plain_clients line
// ("" for none: the module's default).
func notifyConfigPlain(plain string, directives ...string) string {
	var b strings.Builder
	b.WriteString(`
storage.imapsql local_mailboxes {
	driver sqlite3
	dsn imapsql.db
}

storage.notify notified_mailboxes {
	storage &local_mailboxes
`)
	if plain != "" {
		b.WriteString("\t" + plain + "\n")
	}
	for _, d := range directives {
		b.WriteString("\t" + d + "\n")
	}
	b.WriteString("}\n")
	b.WriteString(notifyEndpoints)
	return b.String()
}

// startNotify starts maddy with notifyConfig(directives...).
func startNotify(t *testing.T, directives ...string) *testkit.Server {
	t.Helper()
	return testkit.Start(t, testkit.Options{Config: notifyConfig(directives...), Ports: []string{"imap", "smtp"}})
}

// rawLogin opens a raw IMAP connection and logs in as name.
func rawLogin(t *testing.T, srv *testkit.Server, name string) *testkit.RawConn {
	t.Helper()
	c := testkit.DialRaw(t, srv.Addr("imap"))
	c.Login(name, pass)
	return c
}

// rawSelect selects mailbox (a wire form: INBOX or a quoted string).
func rawSelect(t *testing.T, c *testkit.RawConn, mailbox string) {
	t.Helper()
	if _, tagged := c.Cmd("SELECT " + mailbox); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("SELECT %s: %s", mailbox, tagged)
	}
}

// idler logs in as name, selects mailbox (wire form) and starts IDLE.
func idler(t *testing.T, srv *testkit.Server, name, mailbox string) *testkit.RawConn {
	t.Helper()
	c := rawLogin(t, srv, name)
	rawSelect(t, c, mailbox)
	c.Idle()
	return c
}

// rawAppend appends msg to mailbox (wire form) with a LITERAL+ literal, so
// that a raw connection can APPEND, and returns the untagged lines of the
// response.
func rawAppend(t *testing.T, c *testkit.RawConn, mailbox, msg string) []string {
	t.Helper()
	untagged, tagged := c.Cmd(fmt.Sprintf("APPEND %s {%d+}\r\n%s", mailbox, len(msg), msg))
	if !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("APPEND %s: %s", mailbox, tagged)
	}
	return untagged
}

// doneQuiet ends c's IDLE and fails the test if lines came with the end
// of it (everything due must have been read before).
func doneQuiet(t *testing.T, c *testkit.RawConn) {
	t.Helper()
	if rest := c.Done(); len(rest) != 0 {
		t.Errorf("lines at the end of IDLE: %q", rest)
	}
}

// mustCmd runs cmd and fails the test unless it completes with OK; it
// returns the untagged lines.
func mustCmd(t *testing.T, c *testkit.RawConn, cmd string) []string {
	t.Helper()
	untagged, tagged := c.Cmd(cmd)
	if !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("%s: %q %s", cmd, untagged, tagged)
	}
	return untagged
}

// readLines reads n lines from c, all within timeout, and fails the test
// with what it got otherwise.
func readLines(t *testing.T, c *testkit.RawConn, timeout time.Duration, n int) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got []string
	for len(got) < n {
		line, err := c.ReadLine(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for line %d of %d: %v\n got: %q", len(got)+1, n, err, got)
		}
		got = append(got, line)
	}
	return got
}

// expectNewMessage reads the line that must follow the store's
// "* seq EXISTS" and "* seq RECENT" for a new message in the selected
// mailbox under the default new_message_fetch: its FETCH (UID ...). It
// fails the test, saying so, when none comes, and returns the line.
func expectNewMessage(t *testing.T, c *testkit.RawConn, seq int) string {
	t.Helper()
	line, err := c.ReadLine(expectWait)
	if err != nil {
		t.Fatalf("no * %d FETCH (UID ...) after * %d EXISTS and * %d RECENT within %v: %v", seq, seq, seq, expectWait, err)
	}
	if !strings.HasPrefix(line, fmt.Sprintf("* %d FETCH (UID ", seq)) {
		t.Fatalf("after * %d EXISTS and * %d RECENT: %q, want * %d FETCH (UID ...)", seq, seq, line, seq)
	}
	return line
}

// expectAnyOrder reads len(want) lines and fails the test unless they are
// want in some order. It returns the lines in the order they came.
func expectAnyOrder(t *testing.T, c *testkit.RawConn, want ...string) []string {
	t.Helper()
	got := readLines(t, c, expectWait, len(want))
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("lines differ (order aside)\n got: %q\nwant: %q", got, want)
	}
	return got
}

// inOrder fails the test unless sub occur in lines in this order.
func inOrder(t *testing.T, lines []string, sub ...string) {
	t.Helper()
	last := -1
	for _, s := range sub {
		i := slices.Index(lines, s)
		if i < 0 || i < last {
			t.Fatalf("lines %q: want %q in this order", lines, sub)
		}
		last = i
	}
}

// collectUntilQuiet reads lines until none arrives for quiet, or until
// limit has passed since the call; it reports whether it hit the limit.
func collectUntilQuiet(c *testkit.RawConn, quiet, limit time.Duration) (lines []string, timedOut bool, err error) {
	deadline := time.Now().Add(limit)
	for {
		wait := min(quiet, time.Until(deadline))
		if wait <= 0 {
			return lines, true, nil
		}
		line, err := c.ReadLine(wait)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if time.Until(deadline) <= 0 {
				return lines, true, nil
			}
			return lines, false, nil
		}
		if err != nil {
			return lines, false, err
		}
		lines = append(lines, line)
	}
}

// noopUntil sends NOOP on c (selected, not idling) until the NOOPs together
// returned n untagged lines or expectWait has passed, and returns all the
// untagged lines. Events reach a session asynchronously: the first NOOP
// after the change may come too early, so the test polls; each line must
// still come exactly once.
func noopUntil(t *testing.T, c *testkit.RawConn, n int) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(expectWait)
	for {
		untagged := mustCmd(t, c, "NOOP")
		got = append(got, untagged...)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		<-time.After(50 * time.Millisecond) // polling interval, not for correctness
	}
}

var (
	statusValueRe = regexp.MustCompile(`\b(MESSAGES|UIDNEXT|UNSEEN) (\d+)\b`)
	listDelimRe   = regexp.MustCompile(`^\* LIST \([^)]*\) (NIL|"(?:[^"\\]|\\.)")`)
	fetchItemRe   = regexp.MustCompile(`^\* (\d+) FETCH \((FLAGS|BODYSTRUCTURE|UID) (.*)\)$`)
	newFetchRe    = regexp.MustCompile(`^\* (\d+) FETCH \(UID (\d+) FLAGS \(([^)]*)\) BODYSTRUCTURE (\(.*\))\)$`)
)

// storeStatus asks the store with a STATUS command and returns the STATUS
// line the notify module must send for mailbox with its items in the
// configured order (MESSAGES UIDNEXT UNSEEN). wire is the mailbox's wire
// form. The store writes the items in any order; the values are what count.
func storeStatus(t *testing.T, c *testkit.RawConn, wire string) string {
	t.Helper()
	untagged := mustCmd(t, c, "STATUS "+wire+" (MESSAGES UIDNEXT UNSEEN)")
	if len(untagged) != 1 || !strings.HasPrefix(untagged[0], "* STATUS "+wire+" (") {
		t.Fatalf("STATUS %s: %q", wire, untagged)
	}
	v := map[string]string{}
	for _, m := range statusValueRe.FindAllStringSubmatch(untagged[0], -1) {
		v[m[1]] = m[2]
	}
	if len(v) != 3 {
		t.Fatalf("STATUS %s: %q lacks items", wire, untagged[0])
	}
	return fmt.Sprintf("* STATUS %s (MESSAGES %s UIDNEXT %s UNSEEN %s)", wire, v["MESSAGES"], v["UIDNEXT"], v["UNSEEN"])
}

// status returns the STATUS line for mailbox (wire form) with the given
// values, items in the module's default order.
func status(wire string, messages, uidNext, unseen int) string {
	return fmt.Sprintf("* STATUS %s (MESSAGES %d UIDNEXT %d UNSEEN %d)", wire, messages, uidNext, unseen)
}

// storeDelimiter returns the store's hierarchy delimiter as written in
// LIST responses (a quoted string or NIL), from `LIST "" ""`.
func storeDelimiter(t *testing.T, c *testkit.RawConn) string {
	t.Helper()
	untagged := mustCmd(t, c, `LIST "" ""`)
	if len(untagged) != 1 {
		t.Fatalf(`LIST "" "": %q`, untagged)
	}
	m := listDelimRe.FindStringSubmatch(untagged[0])
	if m == nil {
		t.Fatalf(`LIST "" "": cannot find the delimiter in %q`, untagged[0])
	}
	return m[1]
}

// fetchItem runs "FETCH seq (item)" on c and returns the item's value as
// written by the server (e.g. `\Seen \Recent` for FLAGS, without the
// parentheses; the parenthesised structure for BODYSTRUCTURE).
func fetchItem(t *testing.T, c *testkit.RawConn, seq int, item string) string {
	t.Helper()
	untagged := mustCmd(t, c, fmt.Sprintf("FETCH %d (%s)", seq, item))
	if len(untagged) != 1 {
		t.Fatalf("FETCH %d (%s): %q", seq, item, untagged)
	}
	m := fetchItemRe.FindStringSubmatch(untagged[0])
	if m == nil || m[1] != strconv.Itoa(seq) || m[2] != item {
		t.Fatalf("FETCH %d (%s): unexpected %q", seq, item, untagged[0])
	}
	if item == "FLAGS" {
		return strings.TrimSuffix(strings.TrimPrefix(m[3], "("), ")")
	}
	return m[3]
}

// moduleBodyStructure returns the BODYSTRUCTURE storage.notify pushes for
// a message whose BODYSTRUCTURE the store answers as store (fetchItem's
// value, go-imap v1's form): store read with go-imap v1's parser into the
// structure it was written from, written again with mapping.BodyStructure.
// The two differ exactly where go-imap v1's form is not RFC 3501 syntax
// (NIL encoding, "()" parameters, SP between parts and addresses).
func moduleBodyStructure(t *testing.T, store string) string {
	t.Helper()
	fields, err := imapv1.NewReader(bufio.NewReader(strings.NewReader(store + "\r\n"))).ReadLine()
	if err != nil || len(fields) != 1 {
		t.Fatalf("go-imap v1 reads BODYSTRUCTURE %q as %v, %v", store, fields, err)
	}
	list, ok := fields[0].([]interface{})
	if !ok {
		t.Fatalf("BODYSTRUCTURE %q is not a list", store)
	}
	var bs imapv1.BodyStructure
	if err := bs.Parse(list); err != nil {
		t.Fatalf("go-imap v1 parses BODYSTRUCTURE %q: %v", store, err)
	}
	return string(mapping.BodyStructure(&bs))
}

// multipartMessage is a multipart/mixed message with two text parts, for a
// BODYSTRUCTURE with some depth. Each Content-Type has at most one
// parameter: go-imap v1 writes parameter lists in map order, so two
// parameters would make the server's own FETCH output vary.
func multipartMessage(subject string) string {
	return strings.Join([]string{
		"From: Sender <sender@maddy.test>",
		"To: User <user@maddy.test>",
		"Subject: " + subject,
		"Date: Mon, 02 Jan 2006 15:04:05 +0000",
		"Message-ID: <multipart@maddy.test>",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="b1"`,
		"",
		"--b1",
		"Content-Type: text/plain; charset=us-ascii",
		"",
		"Hello.",
		"--b1",
		`Content-Type: text/plain; name="trip.txt"`,
		"Content-Transfer-Encoding: base64",
		"Content-Description: Your trip details",
		"",
		"SGVsbG8gdHJpcC4=",
		"--b1--",
		"",
	}, "\r\n")
}

// store runs STORE with op (+FLAGS.SILENT etc.) on seq through c.
func store(t *testing.T, c *imapclient.Client, seq imap.NumSet, op imap.StoreFlagsOp, flags ...imap.Flag) {
	t.Helper()
	mustOK(t, fmt.Sprintf("STORE %v %v", seq, flags), c.Store(seq, &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close())
}

// TestNotifyNewMessageInSelected: a session idling on INBOX gets, for every
// new message (APPEND, COPY, MOVE, SMTP delivery), the store's EXISTS and
// RECENT and then one FETCH (UID FLAGS BODYSTRUCTURE) whose flags are what
// that session's FETCH FLAGS says and whose BODYSTRUCTURE is byte for byte
// what the store answers to FETCH BODYSTRUCTURE in RFC 3501 syntax
// (moduleBodyStructure).
func TestNotifyNewMessageInSelected(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	// Before B logs in, so B is told nothing about them.
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	for i := 1; i <= 3; i++ {
		appendMsg(t, a, "Archive", fmt.Sprintf("archived %d", i))
	}

	b := idler(t, srv, user, "INBOX")
	fetches := map[int]string{} // sequence number → pushed FETCH line
	newMessage := func(seq int) {
		t.Helper()
		b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", seq), fmt.Sprintf("* %d RECENT", seq))
		fetches[seq] = expectNewMessage(t, b, seq)
		b.ExpectNothing(t, quietWait)
	}

	// APPEND (A has never selected INBOX: \Recent goes to B).
	appendRaw(t, a, "INBOX", multipartMessage("multipart"))
	newMessage(1)

	// COPY from Archive: Archive does not change, so no STATUS.
	_, err := a.Select("Archive", nil).Wait()
	mustOK(t, "SELECT Archive", err)
	_, err = a.Copy(imap.SeqSetNum(1), "INBOX").Wait()
	mustOK(t, "COPY 1 INBOX", err)
	newMessage(2)

	// MOVE from Archive: the new message in INBOX and a STATUS for
	// Archive, which lost one. The store's lines and ours come from
	// different goroutines, so only the store's are held to their order.
	_, err = a.Move(imap.SeqSetNum(1), "INBOX").Wait()
	mustOK(t, "MOVE 1 INBOX", err)
	got := readLines(t, b, expectWait, 4)
	inOrder(t, got, "* 3 EXISTS", "* 3 RECENT")
	statusLine := status(`"Archive"`, 2, 4, 2)
	if !slices.Contains(got, statusLine) {
		t.Fatalf("after MOVE into INBOX: %q, want %q among them", got, statusLine)
	}
	for _, l := range got {
		if strings.HasPrefix(l, "* 3 FETCH ") {
			fetches[3] = l
		}
	}
	if fetches[3] == "" || slices.Index(got, fetches[3]) < slices.Index(got, "* 3 RECENT") {
		t.Fatalf("after MOVE into INBOX: %q: want * 3 EXISTS, * 3 RECENT, then * 3 FETCH (...)", got)
	}
	b.ExpectNothing(t, quietWait)

	// SMTP delivery.
	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("delivered"))
	newMessage(4)

	doneQuiet(t, b)

	// What the pushed lines must say, from the store: B's own view of
	// the flags, and the BODYSTRUCTURE as a fresh session fetches it.
	c := rawLogin(t, srv, user)
	if _, tagged := c.Cmd("EXAMINE INBOX"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("EXAMINE INBOX: %s", tagged)
	}
	for seq := 1; seq <= 4; seq++ {
		flags := fetchItem(t, b, seq, "FLAGS")
		bs := moduleBodyStructure(t, fetchItem(t, c, seq, "BODYSTRUCTURE"))
		uid := fetchItem(t, c, seq, "UID")
		want := fmt.Sprintf("* %d FETCH (UID %s FLAGS (%s) BODYSTRUCTURE %s)", seq, uid, flags, bs)
		if fetches[seq] != want {
			t.Errorf("message %d: pushed\n  %q\nwant\n  %q", seq, fetches[seq], want)
		}
		if uid != strconv.Itoa(seq) {
			t.Errorf("message %d has UID %s, want %d", seq, uid, seq)
		}
		if flags != `\Recent` {
			t.Errorf("message %d: B's flags %q, want \\Recent (B was the only session with INBOX selected)", seq, flags)
		}
	}
	if !strings.Contains(fetches[1], `"mixed"`) {
		t.Errorf("message 1: %q is not the multipart structure", fetches[1])
	}
}

// strictMessages are messages whose BODYSTRUCTURE or ENVELOPE go-imap v1
// writes in forms RFC 3501 does not have: no Content-Type and no
// Content-Transfer-Encoding (NIL encoding, "()" parameters), an attachment
// with a disposition, a message/rfc822 part, two addresses in To.
var strictMessages = []string{
	"From: a@maddy.test\r\nTo: b@maddy.test, C <c@maddy.test>\r\nSubject: bare\r\n\r\nNo MIME at all.\r\n",
	strings.Join([]string{
		"From: a@maddy.test", "Subject: attachment", "MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="b1"`, "",
		"--b1", "", "Body without headers.",
		"--b1", "Content-Type: application/octet-stream", `Content-Disposition: attachment; filename="x.bin"`,
		"Content-Transfer-Encoding: base64", "", "AAEC",
		"--b1", "Content-Type: message/rfc822", `Content-Disposition: inline`, "",
		"From: inner@maddy.test", "To: x@maddy.test, y@maddy.test", "Subject: inner", "", "Inner body.",
		"--b1--", "",
	}, "\r\n"),
}

// TestNotifyFetchSyntax: the FETCH a session is pushed for a new message is
// RFC 3501 syntax (RawConn checks every pushed line) for the messages
// go-imap v1 writes wrongly, and carries the store's BODYSTRUCTURE
// (moduleBodyStructure), while the store's own FETCH BODYSTRUCTURE of the
// same message is not RFC 3501 syntax.
func TestNotifyFetchSyntax(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := idler(t, srv, user, "INBOX")
	var pushed []string
	for i, msg := range strictMessages {
		seq := i + 1
		appendRaw(t, a, "INBOX", msg)
		b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", seq), fmt.Sprintf("* %d RECENT", seq))
		pushed = append(pushed, expectNewMessage(t, b, seq))
		b.ExpectNothing(t, quietWait)
	}
	doneQuiet(t, b)

	c := rawLogin(t, srv, user)
	mustCmd(t, c, "EXAMINE INBOX")
	for i, line := range pushed {
		seq := i + 1
		if err := imapsyntax.CheckPlainResponse([]byte(line + "\r\n")); err != nil {
			t.Errorf("message %d: %v", seq, err)
		}
		store := fetchItem(t, c, seq, "BODYSTRUCTURE")
		storeLine := fmt.Sprintf("* %d FETCH (BODYSTRUCTURE %s)\r\n", seq, store)
		err := imapsyntax.CheckResponse([]byte(storeLine))
		t.Logf("message %d: pushed %q; the store: %v", seq, line, err)
		if err == nil {
			t.Errorf("message %d: the store's %q is RFC 3501 syntax: this test no longer shows why the module writes BODYSTRUCTURE itself", seq, storeLine)
		}
		want := fmt.Sprintf("* %d FETCH (UID %d FLAGS (%s) BODYSTRUCTURE %s)", seq, seq, fetchItem(t, b, seq, "FLAGS"), moduleBodyStructure(t, store))
		if line != want {
			t.Errorf("message %d: pushed\n  %q\nwant\n  %q", seq, line, want)
		}
	}
}

// TestNotifyStatusOtherMailbox: changes to a mailbox other than the
// selected one reach an idling session as STATUS with the exact values
// (APPEND, COPY, flag changes that change UNSEEN, EXPUNGE, MOVE in and out);
// changes that leave MESSAGES, UIDNEXT and UNSEEN alone send nothing.
func TestNotifyStatusOtherMailbox(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	mustOK(t, "CREATE Other", a.Create("Other", nil).Wait())
	appendMsg(t, a, "INBOX", "in inbox")

	b := idler(t, srv, user, "INBOX")

	// APPEND to Archive.
	appendMsg(t, a, "Archive", "a1")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	b.ExpectNothing(t, quietWait)

	// COPY from INBOX to Archive.
	_, err := a.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)
	_, err = a.Copy(imap.SeqSetNum(1), "Archive").Wait()
	mustOK(t, "COPY 1 Archive", err)
	b.Expect(t, expectWait, status(`"Archive"`, 2, 3, 2))
	b.ExpectNothing(t, quietWait)

	// Flags in Archive: \Seen changes UNSEEN; a keyword and \Deleted
	// change no configured item.
	_, err = a.Select("Archive", nil).Wait()
	mustOK(t, "SELECT Archive", err)
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, expectWait, status(`"Archive"`, 2, 3, 1))
	b.ExpectNothing(t, quietWait)
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, "$Label1")
	b.ExpectNothing(t, quietWait)
	store(t, a, imap.SeqSetNum(2), imap.StoreFlagsAdd, imap.FlagDeleted)
	b.ExpectNothing(t, quietWait)

	// EXPUNGE in Archive.
	_, err = a.Expunge().Collect()
	mustOK(t, "EXPUNGE", err)
	b.Expect(t, expectWait, status(`"Archive"`, 1, 3, 0))
	b.ExpectNothing(t, quietWait)

	// MOVE out of Archive into Other: a STATUS for each.
	appendMsg(t, a, "Archive", "a2") // UID 3
	b.Expect(t, expectWait, status(`"Archive"`, 2, 4, 1))
	_, err = a.Move(imap.UIDSetNum(3), "Other").Wait()
	mustOK(t, "UID MOVE 3 Other", err)
	expectAnyOrder(t, b, status(`"Other"`, 1, 2, 1), status(`"Archive"`, 1, 4, 0))
	b.ExpectNothing(t, quietWait)

	// MOVE from INBOX, which B has selected, to Archive: the store's
	// EXPUNGE (once) and our STATUS for Archive.
	_, err = a.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)
	_, err = a.Move(imap.SeqSetNum(1), "Archive").Wait()
	mustOK(t, "MOVE 1 Archive", err)
	expectAnyOrder(t, b, "* 1 EXPUNGE", status(`"Archive"`, 2, 5, 1))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)

	// The values B was told last are the store's.
	for _, last := range []struct{ wire, line string }{
		{`"Archive"`, status(`"Archive"`, 2, 5, 1)},
		{`"Other"`, status(`"Other"`, 1, 2, 1)},
	} {
		if got := storeStatus(t, b, last.wire); got != last.line {
			t.Errorf("STATUS %s now: %q; the last line B got: %q", last.wire, got, last.line)
		}
	}
}

// TestNotifySelectedFlagsAndExpunge: in the selected mailbox the session
// gets exactly the store's FETCH FLAGS and EXPUNGE lines, once each, and
// no STATUS for that mailbox even though UNSEEN and MESSAGES change.
func TestNotifySelectedFlagsAndExpunge(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := idler(t, srv, user, "INBOX")
	for i := 1; i <= 3; i++ {
		appendMsg(t, a, "INBOX", fmt.Sprintf("message %d", i))
		b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", i), fmt.Sprintf("* %d RECENT", i))
		line := expectNewMessage(t, b, i)
		if m := newFetchRe.FindStringSubmatch(line); m == nil || m[1] != strconv.Itoa(i) || m[2] != strconv.Itoa(i) || m[3] != `\Recent` {
			t.Fatalf("after APPEND %d: %q, want * %d FETCH (UID %d FLAGS (\\Recent) BODYSTRUCTURE (...))", i, line, i, i)
		}
	}
	b.ExpectNothing(t, quietWait)

	_, err := a.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, expectWait, `* 1 FETCH (FLAGS (\Seen \Recent) UID 1)`)
	b.ExpectNothing(t, quietWait)

	store(t, a, imap.SeqSetNum(2, 3), imap.StoreFlagsAdd, imap.FlagDeleted)
	b.Expect(t, expectWait,
		`* 2 FETCH (FLAGS (\Deleted \Recent) UID 2)`,
		`* 3 FETCH (FLAGS (\Deleted \Recent) UID 3)`)
	b.ExpectNothing(t, quietWait)

	_, err = a.Expunge().Collect()
	mustOK(t, "EXPUNGE", err)
	b.Expect(t, expectWait, "* 3 EXPUNGE", "* 2 EXPUNGE")
	b.ExpectNothing(t, quietWait)

	// Stock maddy writes an empty flag before \Recent when the last flag
	// is removed (measured with the bare store): the line stays as is.
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsDel, imap.FlagSeen)
	b.Expect(t, expectWait, `* 1 FETCH (FLAGS ( \Recent) UID 1)`)
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	if untagged := mustCmd(t, b, "FETCH 1:* (UID)"); !slices.Equal(untagged, []string{"* 1 FETCH (UID 1)"}) {
		t.Errorf("B's view after the EXPUNGE: %q, want only message 1", untagged)
	}
}

// TestNotifyMailboxEvents: CREATE, SUBSCRIBE, UNSUBSCRIBE, RENAME (with
// children: a line per renamed mailbox) and DELETE by one session reach
// another session of the account as LIST lines.
func TestNotifyMailboxEvents(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	if len(d) != 3 || d[0] != '"' {
		t.Fatalf("the store's delimiter %s: this test needs a one-character quoted delimiter", d)
	}
	sep := d[1:2] // the delimiter itself, for names
	rawSelect(t, b, "INBOX")
	b.Idle()

	list := func(attrs, name string) string {
		return fmt.Sprintf(`* LIST (%s) %s %s`, attrs, d, testkit.Quote(name))
	}
	// A plain client is told of a rename as the old name's deletion and
	// the new name's creation (no LIST extended data).
	rename := func(attrs, name, old string) []string {
		return []string{list(`\NonExistent`, old), list(attrs, name)}
	}

	mustOK(t, "CREATE Folder", a.Create("Folder", nil).Wait())
	b.Expect(t, expectWait, list(`\HasNoChildren`, "Folder"))
	b.ExpectNothing(t, quietWait)

	// imapsql subscribes a mailbox it creates: unsubscribe first.
	mustOK(t, "UNSUBSCRIBE Folder", a.Unsubscribe("Folder").Wait())
	b.Expect(t, expectWait, list(`\HasNoChildren`, "Folder"))
	b.ExpectNothing(t, quietWait)
	mustOK(t, "SUBSCRIBE Folder", a.Subscribe("Folder").Wait())
	b.Expect(t, expectWait, list(`\HasNoChildren \Subscribed`, "Folder"))
	b.ExpectNothing(t, quietWait)

	mustOK(t, "RENAME Folder Renamed", a.Rename("Folder", "Renamed", nil).Wait())
	b.Expect(t, expectWait, rename(`\HasNoChildren`, "Renamed", "Folder")...)
	b.ExpectNothing(t, quietWait)

	parent, child := "Par", "Par"+sep+"Child"
	mustOK(t, "CREATE "+parent, a.Create(parent, nil).Wait())
	b.Expect(t, expectWait, list(`\HasNoChildren`, parent))
	mustOK(t, "CREATE "+child, a.Create(child, nil).Wait())
	b.Expect(t, expectWait, list(`\HasNoChildren`, child))
	b.ExpectNothing(t, quietWait)

	// RENAME moves the hierarchy: one line for the mailbox and one for
	// each child, with the attributes LIST gives them now.
	newParent, newChild := "NewPar", "NewPar"+sep+"Child"
	mustOK(t, "RENAME Par NewPar", a.Rename(parent, newParent, nil).Wait())
	got := expectAnyOrder(t, b, append(rename(`\HasChildren`, newParent, parent), rename(`\HasNoChildren`, newChild, child)...)...)
	inOrder(t, got, rename(`\HasChildren`, newParent, parent)...)
	inOrder(t, got, rename(`\HasNoChildren`, newChild, child)...)
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	listed := mustCmd(t, b, `LIST "" "NewPar*"`)
	if want := []string{list(`\HasChildren`, newParent), list(`\HasNoChildren`, newChild)}; !slices.Equal(listed, want) {
		t.Errorf(`LIST "" "NewPar*" = %q, want %q (the attributes the RENAME lines carry)`, listed, want)
	}
	b.Idle()

	mustOK(t, "DELETE Renamed", a.Delete("Renamed").Wait())
	b.Expect(t, expectWait, list(`\NonExistent`, "Renamed"))
	b.ExpectNothing(t, quietWait)
	mustOK(t, "DELETE "+newChild, a.Delete(newChild).Wait())
	b.Expect(t, expectWait, list(`\NonExistent`, newChild))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestNotifyOwnChangesSuppressed: a session is not told about its own
// CREATE, UNSUBSCRIBE, RENAME, DELETE or its own APPEND to another mailbox,
// neither in IDLE nor at NOOP; another session of the same user is.
func TestNotifyOwnChangesSuppressed(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	setup := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", setup.Create("Archive", nil).Wait())

	a := rawLogin(t, srv, user)
	d := storeDelimiter(t, a)
	rawSelect(t, a, "INBOX")
	c := idler(t, srv, user, "INBOX")

	// own fails the test if A's response to its own command carries
	// untagged lines.
	own := func(untagged []string) {
		t.Helper()
		if len(untagged) != 0 {
			t.Errorf("A's own command answered with %q, want no untagged lines", untagged)
		}
	}
	own(mustCmd(t, a, "CREATE Own"))
	c.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Own"`, d))
	own(rawAppend(t, a, `"Archive"`, testkit.Message("own append")))
	c.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	own(mustCmd(t, a, "UNSUBSCRIBE Own"))
	c.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Own"`, d))
	own(mustCmd(t, a, "RENAME Own Own2"))
	c.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Own"`, d), fmt.Sprintf(`* LIST (\HasNoChildren) %s "Own2"`, d))
	own(mustCmd(t, a, "DELETE Own2"))
	c.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Own2"`, d))
	c.ExpectNothing(t, quietWait)

	// C has been told everything: A's notifications, if any, are queued
	// by now.
	if untagged := mustCmd(t, a, "NOOP"); len(untagged) != 0 {
		t.Errorf("A's NOOP after its own changes: %q, want nothing", untagged)
	}
	a.Idle()
	a.ExpectNothing(t, quietWait)
	doneQuiet(t, a)

	// A is not deaf: C's change reaches it.
	doneQuiet(t, c)
	mustCmd(t, c, "CREATE FromC")
	a.Idle()
	a.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "FromC"`, d))
	a.ExpectNothing(t, quietWait)
	doneQuiet(t, a)
}

// TestNotifyAccountIsolation: a session of another account hears nothing of
// this account's changes, and the other way round.
func TestNotifyAccountIsolation(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())

	other := idler(t, srv, user2, "INBOX")
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")
	b.Idle()

	mustOK(t, "CREATE Shared", a.Create("Shared", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Shared"`, d))
	appendMsg(t, a, "Archive", "to archive")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	mustOK(t, "DELETE Shared", a.Delete("Shared").Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Shared"`, d))
	appendMsg(t, a, "INBOX", "to inbox")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	expectNewMessage(t, b, 1) // its form is TestNotifyNewMessageInSelected's
	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("smtp"))
	b.Expect(t, expectWait, "* 2 EXISTS", "* 2 RECENT")
	expectNewMessage(t, b, 2)
	b.ExpectNothing(t, quietWait)
	// B has got all of it: the other account would have been told by now.
	other.ExpectNothing(t, quietWait)

	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user2}, testkit.Message("for user2"))
	other.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	expectNewMessage(t, other, 1)
	other.ExpectNothing(t, quietWait)
	b.ExpectNothing(t, quietWait)
}

// TestNotifyStatusCoalescing: a burst of 200 APPENDs to another mailbox
// gives at least one and at most 200 STATUS lines, never an older state
// after a newer one, and the last one equals what STATUS says afterwards.
func TestNotifyStatusCoalescing(t *testing.T) {
	t.Parallel()
	const n = 200
	srv := startNotify(t)
	setup := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", setup.Create("Archive", nil).Wait())

	b := idler(t, srv, user, "INBOX")
	a := rawLogin(t, srv, user)

	// Pipelined on one connection: as fast as the server takes them,
	// without concurrent SQLite writers ("database is locked").
	var batch strings.Builder
	for i := 1; i <= n; i++ {
		msg := testkit.Message(fmt.Sprintf("burst %d", i))
		fmt.Fprintf(&batch, "P%d APPEND \"Archive\" {%d+}\r\n%s", i, len(msg), msg)
		if i < n {
			batch.WriteString("\r\n")
		}
	}
	a.Timeout = 30 * time.Second
	a.Send(batch.String())
	tagged := regexp.MustCompile(`^P\d+ `)
	done, locked := 0, 0
	for done < n {
		line, err := a.ReadLine(30 * time.Second)
		if err != nil {
			t.Fatalf("waiting for APPEND %d of %d: %v", done+1, n, err)
		}
		if tagged.MatchString(line) {
			switch {
			case strings.Contains(line, " OK"):
			case strings.Contains(line, "database is locked"):
				locked++ // SQLite's answer to concurrent writers: repeated below
			default:
				t.Fatalf("pipelined APPEND: %q", line)
			}
			done++
		}
	}
	for i := 0; i < locked; i++ {
		appendMsg(t, setup, "Archive", fmt.Sprintf("burst retry %d", i))
	}

	lines, timedOut, err := collectUntilQuiet(b, time.Second, 30*time.Second)
	if err != nil {
		t.Fatalf("reading B: %v (got %d lines)", err, len(lines))
	}
	if timedOut {
		t.Fatalf("B was still receiving lines after 30s: %d lines", len(lines))
	}
	t.Logf("%d APPENDs gave %d STATUS lines", n, len(lines))
	if len(lines) < 1 || len(lines) > n {
		t.Fatalf("%d lines for %d APPENDs, want 1..%d: %q", len(lines), n, n, lines)
	}
	statusRe := regexp.MustCompile(`^\* STATUS "Archive" \(MESSAGES (\d+) UIDNEXT (\d+) UNSEEN (\d+)\)$`)
	prev := -1
	for _, l := range lines {
		m := statusRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unexpected line %q (all: %q)", l, lines)
		}
		messages, _ := strconv.Atoi(m[1])
		if messages <= prev {
			t.Errorf("STATUS went from MESSAGES %d to %d: an older state after a newer one (all: %q)", prev, messages, lines)
		}
		prev = messages
	}
	want := storeStatus(t, a, `"Archive"`)
	if want != status(`"Archive"`, n, n+1, n) {
		t.Errorf("the store says %q after %d APPENDs", want, n)
	}
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("last STATUS %q, STATUS now says %q", last, want)
	}
	doneQuiet(t, b)
}

// TestNotifyOddMailboxNames: names with spaces, quotes, backslashes,
// non-ASCII characters and '&' go out in modified UTF-7 and quoted, and
// go-imap v2's client decodes the LIST (also OLDNAME) and STATUS lines to the
// original names.
func TestNotifyOddMailboxNames(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")
	b.Idle()

	names := []struct{ name, wire string }{
		{"With Space", `"With Space"`},
		{`Quote"Inside`, `"Quote\"Inside"`},
		{`Back\slash`, `"Back\\slash"`},
		{"Entwürfe", `"Entw&APw-rfe"`},
		{"日本語", `"&ZeVnLIqe-"`},
		{"a&b", `"a&-b"`},
	}
	for _, n := range names {
		mustOK(t, "CREATE "+n.name, a.Create(n.name, nil).Wait())
		line := readLines(t, b, expectWait, 1)[0]
		if want := fmt.Sprintf(`* LIST (\HasNoChildren) %s %s`, d, n.wire); line != want {
			t.Errorf("CREATE %q: %q, want %q", n.name, line, want)
		}
		data, err := parseListV2(t, line)
		if err != nil {
			t.Errorf("go-imap v2 cannot parse %q: %v", line, err)
		} else if data.Mailbox != n.name {
			t.Errorf("%q decodes to %q, want %q", line, data.Mailbox, n.name)
		}
	}
	b.ExpectNothing(t, quietWait)

	for _, n := range names {
		appendMsg(t, a, n.name, "for "+n.name)
		line := readLines(t, b, expectWait, 1)[0]
		if want := status(n.wire, 1, 2, 1); line != want {
			t.Errorf("APPEND to %q: %q, want %q", n.name, line, want)
		}
		if err := parseStatusV2(t, n.name, line); err != nil {
			t.Errorf("go-imap v2 on %q: %v", line, err)
		}
	}
	b.ExpectNothing(t, quietWait)

	// A plain client is told of the rename as the old name's deletion and
	// the new name's creation, then of the new name's messages.
	mustOK(t, "RENAME", a.Rename("a&b", "R&D ünd", nil).Wait())
	renamed := readLines(t, b, expectWait, 3)
	if want := []string{
		fmt.Sprintf(`* LIST (\NonExistent) %s "a&-b"`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren) %s "R&-D &APw-nd"`, d),
		status(`"R&-D &APw-nd"`, 1, 2, 1),
	}; !slices.Equal(renamed, want) {
		t.Errorf("RENAME: %q, want %q", renamed, want)
	}
	for i, name := range []string{"a&b", "R&D ünd"} {
		if data, err := parseListV2(t, renamed[i]); err != nil {
			t.Errorf("go-imap v2 cannot parse %q: %v", renamed[i], err)
		} else if data.Mailbox != name || data.OldName != "" {
			t.Errorf("%q decodes to %q (OLDNAME %q), want %q", renamed[i], data.Mailbox, data.OldName, name)
		}
	}
	if err := parseStatusV2(t, "R&D ünd", renamed[2]); err != nil {
		t.Errorf("go-imap v2 on %q: %v", renamed[2], err)
	}
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestNotifySMTPDelivery: mail delivered over SMTP into INBOX reaches a
// session idling on INBOX as EXISTS, RECENT and FETCH, and one idling on
// another mailbox as STATUS INBOX (unquoted).
func TestNotifySMTPDelivery(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := idler(t, srv, user, "INBOX")

	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("first"))
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	line := expectNewMessage(t, b, 1)
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	want := fmt.Sprintf("* 1 FETCH (UID 1 FLAGS (%s) BODYSTRUCTURE %s)", fetchItem(t, b, 1, "FLAGS"), moduleBodyStructure(t, fetchItem(t, b, 1, "BODYSTRUCTURE")))
	if line != want {
		t.Errorf("after SMTP delivery: %q, want %q", line, want)
	}

	mustCmd(t, b, "CREATE Archive") // B's own: no LIST for it
	rawSelect(t, b, `"Archive"`)
	b.Idle()
	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("second"))
	b.Expect(t, expectWait, status("INBOX", 2, 3, 2))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	if got := storeStatus(t, b, "INBOX"); got != status("INBOX", 2, 3, 2) {
		t.Errorf("STATUS INBOX now: %q", got)
	}
}

// TestNotifyNoop: a selected session that does not IDLE gets the selected
// mailbox's lines at its next NOOP, before the tagged OK, each once; the
// draft's STATUS and LIST wait for its next IDLE (plain_clients draft).
func TestNotifyNoop(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")

	mustOK(t, "CREATE Fresh", a.Create("Fresh", nil).Wait())
	appendMsg(t, a, "Archive", "archived")
	appendMsg(t, a, "INBOX", "new")
	got := noopUntil(t, b, 3)
	if len(got) != 3 || got[0] != "* 1 EXISTS" || got[1] != "* 1 RECENT" {
		t.Fatalf("NOOPs after APPEND to INBOX: %q, want * 1 EXISTS, * 1 RECENT, * 1 FETCH (...)", got)
	}
	if wantFetch := fmt.Sprintf("* 1 FETCH (UID 1 FLAGS (%s) BODYSTRUCTURE %s)",
		fetchItem(t, b, 1, "FLAGS"), moduleBodyStructure(t, fetchItem(t, b, 1, "BODYSTRUCTURE"))); got[2] != wantFetch {
		t.Errorf("NOOP after APPEND to INBOX: %q, want %q", got[2], wantFetch)
	}

	<-time.After(quietWait) // the LIST and STATUS are due by now
	if untagged := mustCmd(t, b, "NOOP"); len(untagged) != 0 {
		t.Errorf("a further NOOP: %q, want nothing", untagged)
	}
	b.Idle()
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresh"`, d), status(`"Archive"`, 1, 2, 1))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	if untagged := mustCmd(t, b, "NOOP"); len(untagged) != 0 {
		t.Errorf("NOOP after IDLE: %q, want nothing", untagged)
	}
}

// TestNotifyPolicy: the optional directives change what is sent.
func TestNotifyPolicy(t *testing.T) {
	t.Parallel()
	t.Run("status_mailboxes none", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "status_mailboxes none")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
		b := idler(t, srv, user, "INBOX")
		appendMsg(t, a, "Archive", "no status")
		appendMsg(t, a, "INBOX", "seen")
		b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
		expectNewMessage(t, b, 1)
		b.ExpectNothing(t, quietWait)
	})

	t.Run("status_mailboxes inboxes", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "status_mailboxes inboxes")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
		mustOK(t, "CREATE Other", a.Create("Other", nil).Wait())
		b := idler(t, srv, user, `"Archive"`)
		appendMsg(t, a, "Other", "no status")
		appendMsg(t, a, "INBOX", "status")
		b.Expect(t, expectWait, status("INBOX", 1, 2, 1))
		b.ExpectNothing(t, quietWait)
	})

	t.Run("status_mailboxes subscribed", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "status_mailboxes subscribed")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
		mustOK(t, "CREATE Unsubscribed", a.Create("Unsubscribed", nil).Wait())
		mustOK(t, "UNSUBSCRIBE Unsubscribed", a.Unsubscribe("Unsubscribed").Wait())
		b := idler(t, srv, user, "INBOX")
		appendMsg(t, a, "Unsubscribed", "no status")
		appendMsg(t, a, "Archive", "status")
		b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
		b.ExpectNothing(t, quietWait)
	})

	t.Run("status_items", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "status_items MESSAGES UIDNEXT")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
		b := idler(t, srv, user, "INBOX")
		appendMsg(t, a, "Archive", "one")
		b.Expect(t, expectWait, `* STATUS "Archive" (MESSAGES 1 UIDNEXT 2)`)
		b.ExpectNothing(t, quietWait)
		// Without UNSEEN a flag change changes no item.
		_, err := a.Select("Archive", nil).Wait()
		mustOK(t, "SELECT Archive", err)
		store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
		b.ExpectNothing(t, quietWait)
		appendMsg(t, a, "Archive", "two")
		b.Expect(t, expectWait, `* STATUS "Archive" (MESSAGES 2 UIDNEXT 3)`)
		b.ExpectNothing(t, quietWait)
	})

	t.Run("new_message_fetch without items", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "new_message_fetch")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
		b := idler(t, srv, user, "INBOX")
		appendMsg(t, a, "INBOX", "no fetch")
		b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
		appendMsg(t, a, "Archive", "status")
		b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
		b.ExpectNothing(t, quietWait)
	})

	t.Run("new_message_fetch FLAGS", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "new_message_fetch FLAGS")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		b := idler(t, srv, user, "INBOX")
		appendMsg(t, a, "INBOX", "flags only")
		b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT", `* 1 FETCH (UID 1 FLAGS (\Recent))`)
		b.ExpectNothing(t, quietWait)
	})

	t.Run("events without MailboxCreate", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "events MessageNew MessageAppend MessageExpunge FlagChange MailboxDelete MailboxRename SubscriptionChange")
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		b := rawLogin(t, srv, user)
		d := storeDelimiter(t, b)
		rawSelect(t, b, "INBOX")
		b.Idle()
		mustOK(t, "CREATE Quiet", a.Create("Quiet", nil).Wait())
		mustOK(t, "DELETE Quiet", a.Delete("Quiet").Wait())
		// Had the CREATE been sent, it would come before the DELETE.
		b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Quiet"`, d))
		b.ExpectNothing(t, quietWait)
	})
}

// TestNotifyConfigValues: an unknown value of an optional directive stops
// maddy with a message naming the directive and the block or its line.
func TestNotifyConfigValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ directive, line string }{
		{"status_mailboxes", "status_mailboxes sometimes"},
		{"status_items", "status_items FOO"},
		{"status_items", "status_items UIDNEXT UNSEEN"}, // MESSAGES is required
		{"events", "events Bogus"},
		{"new_message_fetch", "new_message_fetch BOGUS"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			t.Parallel()
			body := notifyConfig(tc.line)
			exitErr, out := testkit.CheckConfig(t, testkit.Options{Config: body, Ports: []string{"imap", "smtp"}})
			if exitErr == nil {
				t.Fatalf("maddy accepted %q and exited 0:\n%s", tc.line, out)
			}
			if !regexp.MustCompile(`(^|[^.\w])` + tc.directive + `([^.\w]|$)`).MatchString(out) {
				t.Errorf("the message does not name the directive %q:\n%s", tc.directive, out)
			}
			lines := []int{lineOf(t, body, "storage.notify notified_mailboxes {"), lineOf(t, body, "\t"+tc.line)}
			if !strings.Contains(out, notify) && !mentionsLine(out, lines) {
				t.Errorf("the message names neither the block %s nor maddy.conf:%v:\n%s", notify, lines, out)
			}
			if strings.Contains(out, "panic") {
				t.Errorf("maddy panicked:\n%s", out)
			}
		})
	}
}

// A strict parser for pushed lines: go-imap v2's imapclient, connected over
// a net.Pipe to a scripted server that answers every command with the line
// under test and a tagged OK. imapclient beta.8 drops a LIST or STATUS that
// no pending command asked for, so a LIST line is parsed as the answer to
// LIST "" "*", a STATUS line as the answer to STATUS for the expected
// mailbox (the client accepts it only if the name decodes to that mailbox).

const v2Timeout = 10 * time.Second

// v2Scripted returns a go-imap v2 client talking to a scripted server that
// answers each command with line (plus CRLF) and "<tag> OK done".
func v2Scripted(t *testing.T, line string) *imapclient.Client {
	t.Helper()
	srvConn, cliConn := net.Pipe()
	deadline := time.Now().Add(v2Timeout)
	srvConn.SetDeadline(deadline)
	cliConn.SetDeadline(deadline)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srvConn.Close()
		r := bufio.NewReader(srvConn)
		if _, err := io.WriteString(srvConn, "* OK [CAPABILITY IMAP4rev1 LIST-EXTENDED] scripted\r\n"); err != nil {
			return
		}
		for {
			cmd, err := r.ReadString('\n')
			if err != nil {
				return
			}
			fields := strings.Fields(cmd)
			if len(fields) < 2 {
				return
			}
			tag := fields[0]
			out := line + "\r\n" + tag + " OK done\r\n"
			if strings.EqualFold(fields[1], "LOGOUT") {
				out = "* BYE bye\r\n" + tag + " OK done\r\n"
			}
			if _, err := io.WriteString(srvConn, out); err != nil {
				return
			}
		}
	}()
	c := imapclient.New(cliConn, nil)
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

// parseListV2 parses a LIST line with go-imap v2.
func parseListV2(t *testing.T, line string) (*imap.ListData, error) {
	t.Helper()
	data, err := v2Scripted(t, line).List("", "*", nil).Collect()
	if err != nil {
		return nil, err
	}
	if len(data) != 1 {
		return nil, fmt.Errorf("%d LIST data, want 1", len(data))
	}
	return data[0], nil
}

// parseStatusV2 parses a STATUS line with go-imap v2 as the answer to
// STATUS mailbox, and checks that it carries MESSAGES.
func parseStatusV2(t *testing.T, mailbox, line string) error {
	t.Helper()
	data, err := v2Scripted(t, line).Status(mailbox, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		return err
	}
	if data.Mailbox != mailbox {
		return fmt.Errorf("decoded as STATUS of %q, want %q", data.Mailbox, mailbox)
	}
	if data.NumMessages == nil {
		return fmt.Errorf("no MESSAGES in %+v", data)
	}
	return nil
}
