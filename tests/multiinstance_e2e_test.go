// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// Multi-instance end-to-end tests: two maddy processes, A and B, whose
// storage.imapsql blocks share one PostgreSQL database (driver postgres)
// and whose storage.notify blocks use `broker postgres`. A client of A acts;
// a raw IMAP session on B listens in IDLE and is held to the exact lines of
// the mapping table in docs/notifications.md, as the single-instance tests
// do. EXISTS,
// RECENT, EXPUNGE and FETCH FLAGS in B's selected mailbox come through the
// inner store's own PostgreSQL update pipe (which the wrapper must switch
// on), and B's module follows the store's EXISTS with its FETCH (UID ...);
// STATUS and LIST come through the broker.
//
// Each test gets a fresh database from testkit.Postgres: the tests skip
// without a PostgreSQL server (and fail with CI=true).
// TestMultiBrokerUnreachable needs no server.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/lib/pq"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

const (
	// miWait bounds the wait for a line that crosses instances and
	// for the brokers' log lines.
	miWait = 15 * time.Second

	// miBrokerBApp is the application_name of B's broker connections in
	// TestMultiReconnect, so that the test can cut B's LISTEN connection
	// and no other (A's broker and both stores' update pipes LISTEN too).
	miBrokerBApp = "notify_b"
)

// miConfig returns a maddy.conf body: storage.imapsql local_mailboxes
// with driver and dsn, storage.notify notified_mailboxes around it with
// `broker <broker>`, and both endpoints on the notify block.
func miConfig(driver, dsn, broker string) string {
	return miConfigStore(driver, dsn, "", broker)
}

// miConfigStore is miConfig with extra directives (lines) in the
// storage.imapsql block.
func miConfigStore(driver, dsn, extra, broker string) string {
	return fmt.Sprintf(`
storage.imapsql local_mailboxes {
	driver %s
	dsn %s
%s}

storage.notify notified_mailboxes {
	storage &local_mailboxes
	plain_clients draft
	broker %s
}

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
`, driver, dsn, extra, broker)
}

// miCluster is two maddy instances sharing the PostgreSQL database DSN.
type miCluster struct {
	DSN  string
	A, B *testkit.Server
}

// miStartCluster creates a fresh database and starts A and B on it with
// miConfig's blocks and `broker postgres` (the store's DSN).
func miStartCluster(t *testing.T) *miCluster {
	t.Helper()
	dsn := testkit.Postgres(t)
	conf := miConfig("postgres", dsn, "postgres")
	return miStartClusterWith(t, dsn, conf, conf)
}

// miStartClusterWith starts A with configA, then B with configB, both on the
// database dsn. B starts only once A listens: go-imap-sql creates its schema
// at start and two instances doing that at once fail ("type mboxes already
// exists"). It returns once both brokers have logged `broker connected`.
func miStartClusterWith(t *testing.T, dsn, configA, configB string) *miCluster {
	t.Helper()
	ports := []string{"imap", "smtp"}
	c := &miCluster{DSN: dsn}
	c.A = testkit.Start(t, testkit.Options{Config: configA, Ports: ports})
	c.B = testkit.Start(t, testkit.Options{Config: configB, Ports: ports})
	miWaitLog(t, c.A, "broker connected")
	miWaitLog(t, c.B, "broker connected")
	return c
}

// miWaitLog waits until srv's log contains want (miWait at most).
func miWaitLog(t *testing.T, srv *testkit.Server, want string) {
	t.Helper()
	miWaitLogCount(t, srv, want, 1)
}

// miWaitLogCount waits until srv's log contains want n times (miWait at
// most).
func miWaitLogCount(t *testing.T, srv *testkit.Server, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(miWait)
	for strings.Count(srv.Log(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("maddy did not log %q %d times within %v (its log is printed at the end)", want, n, miWait)
		}
		<-time.After(20 * time.Millisecond) // polling interval
	}
}

// miLogin opens a raw IMAP connection to srv and logs in as user.
func miLogin(t *testing.T, srv *testkit.Server) *testkit.RawConn {
	t.Helper()
	c := testkit.DialRaw(t, srv.Addr("imap"))
	c.Login(user, pass)
	return c
}

// miIdler logs in to srv, selects mailbox (wire form) and starts IDLE.
func miIdler(t *testing.T, srv *testkit.Server, mailbox string) *testkit.RawConn {
	t.Helper()
	c := miLogin(t, srv)
	mustCmd(t, c, "SELECT "+mailbox)
	c.Idle()
	return c
}

// miReadFetch reads the line that must follow the store's EXISTS and
// RECENT of a new message: our FETCH (UID ...).
func miReadFetch(t *testing.T, c *testkit.RawConn, after string) string {
	t.Helper()
	line, err := c.ReadLine(miWait)
	if err != nil {
		t.Fatalf("after %s: no FETCH (UID ...) after the store's EXISTS and RECENT within %v: %v\n"+
			"(if the store announced the message before its transaction committed, see TestMultiFetchAfterLateCommit)",
			after, miWait, err)
	}
	return line
}

// miCollect reads lines from c until none has come for quiet, or until
// limit has passed.
func miCollect(t *testing.T, c *testkit.RawConn, quiet, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lines []string
	for {
		wait := min(quiet, time.Until(deadline))
		if wait <= 0 {
			return lines
		}
		line, err := c.ReadLine(wait)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return lines
		}
		if err != nil {
			t.Fatalf("reading lines: %v (so far %q)", err, lines)
		}
		lines = append(lines, line)
	}
}

var (
	miFetchItemRe  = regexp.MustCompile(`^\* (\d+) FETCH \((FLAGS|BODYSTRUCTURE|UID) (.*)\)$`)
	miStatusLineRe = regexp.MustCompile(`^\* STATUS (INBOX|"(?:[^"\\]|\\.)*") \(`)
	miListLineRe   = regexp.MustCompile(`^\* LIST \(`)
	miExpungeRe    = regexp.MustCompile(`^\* \d+ EXPUNGE$`)
)

// miList is the LIST line for name with the store's delimiter "." (go-imap-sql).
func miList(attrs, name string) string {
	return fmt.Sprintf(`* LIST (%s) "." %s`, attrs, testkit.Quote(name))
}

// miFetchItem runs "FETCH seq (item)" on c and returns the item's value as
// the server writes it (FLAGS without the parentheses).
func miFetchItem(t *testing.T, c *testkit.RawConn, seq int, item string) string {
	t.Helper()
	untagged := mustCmd(t, c, fmt.Sprintf("FETCH %d (%s)", seq, item))
	if len(untagged) != 1 {
		t.Fatalf("FETCH %d (%s): %q", seq, item, untagged)
	}
	m := miFetchItemRe.FindStringSubmatch(untagged[0])
	if m == nil || m[1] != strconv.Itoa(seq) || m[2] != item {
		t.Fatalf("FETCH %d (%s): unexpected %q", seq, item, untagged[0])
	}
	if item == "FLAGS" {
		return strings.TrimSuffix(strings.TrimPrefix(m[3], "("), ")")
	}
	return m[3]
}

// miStore runs a silent STORE with op on seq through c.
func miStore(t *testing.T, c *imapclient.Client, seq imap.NumSet, op imap.StoreFlagsOp, flags ...imap.Flag) {
	t.Helper()
	mustOK(t, fmt.Sprintf("STORE %v %v", seq, flags), c.Store(seq, &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close())
}

// miCheckNewMessages holds the FETCH lines B was pushed for new messages
// (by sequence number) to the store: UID, B's own flags and the
// BODYSTRUCTURE a fresh session on A fetches. b must not be idling.
func miCheckNewMessages(t *testing.T, cl *miCluster, b *testkit.RawConn, mailbox string, fetches map[int]string) {
	t.Helper()
	c := miLogin(t, cl.A)
	mustCmd(t, c, "EXAMINE "+mailbox)
	for seq := 1; seq <= len(fetches); seq++ {
		uid := miFetchItem(t, c, seq, "UID")
		want := fmt.Sprintf("* %d FETCH (UID %s FLAGS (%s) BODYSTRUCTURE %s)",
			seq, uid, miFetchItem(t, b, seq, "FLAGS"), moduleBodyStructure(t, miFetchItem(t, c, seq, "BODYSTRUCTURE")))
		if fetches[seq] != want {
			t.Errorf("message %d: B was pushed\n  %q\nwant\n  %q", seq, fetches[seq], want)
		}
	}
}

// miSetupArchive has a create Archive and append n messages to it while b
// idles on another mailbox, and holds b to the LIST line and one STATUS per
// APPEND. Events cross instances asynchronously: a session that logs in on
// B right after a change on A may still be told about it, so the tests let
// B's session exist before A changes anything and wait for each line.
func miSetupArchive(t *testing.T, a *imapclient.Client, b *testkit.RawConn, n int) {
	t.Helper()
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b.Expect(t, miWait, miList(`\HasNoChildren`, "Archive"))
	for i := 1; i <= n; i++ {
		appendMsg(t, a, "Archive", fmt.Sprintf("archived %d", i))
		b.Expect(t, miWait, status(`"Archive"`, i, i+1, i))
	}
	b.ExpectNothing(t, quietWait)
}

// miAppendWatched appends n messages to INBOX through a while b idles on
// INBOX (and has nothing in it yet), and holds b to EXISTS, RECENT and a
// FETCH (UID u FLAGS (\Recent) BODYSTRUCTURE (...)) for each. Appending
// before b's SELECT instead would race the store's update pipe: its
// announcements go out asynchronously and one that comes after the SELECT
// has loaded the message is counted twice by go-imap-mess (a phantom
// EXISTS, seen once under load).
func miAppendWatched(t *testing.T, a *imapclient.Client, b *testkit.RawConn, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		appendMsg(t, a, "INBOX", fmt.Sprintf("message %d", i))
		b.Expect(t, miWait, fmt.Sprintf("* %d EXISTS", i), fmt.Sprintf("* %d RECENT", i))
		line := miReadFetch(t, b, fmt.Sprintf("APPEND %d", i))
		if !strings.HasPrefix(line, fmt.Sprintf(`* %d FETCH (UID %d FLAGS (\Recent) BODYSTRUCTURE (`, i, i)) {
			t.Fatalf("after APPEND %d: %q, want * %d FETCH (UID %d FLAGS (\\Recent) BODYSTRUCTURE (...))", i, line, i, i)
		}
	}
	b.ExpectNothing(t, quietWait)
}

// TestMultiNewMessageInSelected: APPEND, COPY and MOVE into INBOX on A reach
// a session idling on INBOX on B as the store's EXISTS and RECENT (through
// the inner store's PostgreSQL update pipe) followed by our FETCH (UID FLAGS
// BODYSTRUCTURE); the MOVE also gives STATUS for the mailbox it emptied.
func TestMultiNewMessageInSelected(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	b := miIdler(t, cl.B, "INBOX")
	miSetupArchive(t, a, b, 3)

	fetches := map[int]string{}
	newMessage := func(what string, seq int) {
		t.Helper()
		b.Expect(t, miWait, fmt.Sprintf("* %d EXISTS", seq), fmt.Sprintf("* %d RECENT", seq))
		line := miReadFetch(t, b, what)
		if !strings.HasPrefix(line, fmt.Sprintf("* %d FETCH (UID %d FLAGS (", seq, seq)) {
			t.Fatalf("after %s: %q, want * %d FETCH (UID %d FLAGS (...) BODYSTRUCTURE (...))", what, line, seq, seq)
		}
		fetches[seq] = line
		b.ExpectNothing(t, quietWait)
	}

	appendMsg(t, a, "INBOX", "appended")
	newMessage("APPEND", 1)

	// COPY leaves Archive as it is: no STATUS.
	_, err := a.Select("Archive", nil).Wait()
	mustOK(t, "SELECT Archive", err)
	_, err = a.Copy(imap.SeqSetNum(1), "INBOX").Wait()
	mustOK(t, "COPY 1 INBOX", err)
	newMessage("COPY", 2)

	// MOVE: the store's lines and the STATUS for Archive come over
	// different connections, so only the store's order and the FETCH
	// after RECENT are fixed.
	_, err = a.Move(imap.SeqSetNum(1), "INBOX").Wait()
	mustOK(t, "MOVE 1 INBOX", err)
	got := readLines(t, b, miWait, 4)
	wantStatus := status(`"Archive"`, 2, 4, 2)
	iExists, iRecent, iStatus := slices.Index(got, "* 3 EXISTS"), slices.Index(got, "* 3 RECENT"), slices.Index(got, wantStatus)
	iFetch := slices.IndexFunc(got, func(l string) bool { return strings.HasPrefix(l, "* 3 FETCH (UID 3 FLAGS (") })
	if iExists < 0 || iRecent < iExists || iFetch < iRecent || iStatus < 0 {
		t.Fatalf("after MOVE: %q\nwant * 3 EXISTS, * 3 RECENT, * 3 FETCH (UID 3 ...) in this order and %q", got, wantStatus)
	}
	fetches[3] = got[iFetch]
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)

	miCheckNewMessages(t, cl, b, "INBOX", fetches)
	for seq := 1; seq <= 3; seq++ {
		if flags := miFetchItem(t, b, seq, "FLAGS"); flags != `\Recent` {
			t.Errorf("message %d: B's flags %q, want \\Recent (B is the only session with INBOX selected)", seq, flags)
		}
	}
}

// TestMultiStatusOtherMailbox: APPEND to Archive and STORE \Seen in Archive
// on A reach a session idling on INBOX on B as STATUS for Archive.
func TestMultiStatusOtherMailbox(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass)
	b := miIdler(t, cl.B, "INBOX")
	miSetupArchive(t, a, b, 1) // APPEND: STATUS (MESSAGES 1 UIDNEXT 2 UNSEEN 1)

	_, err := a.Select("Archive", nil).Wait()
	mustOK(t, "SELECT Archive", err)
	miStore(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, miWait, status(`"Archive"`, 1, 2, 0))
	b.ExpectNothing(t, quietWait)

	// A flag that changes no STATUS item: nothing.
	miStore(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagFlagged)
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
	if got := storeStatus(t, b, `"Archive"`); got != status(`"Archive"`, 1, 2, 0) {
		t.Errorf("STATUS Archive on B now: %q", got)
	}
}

// TestMultiSelectedFlagsAndExpunge: STORE and EXPUNGE in INBOX on A reach a
// session idling on INBOX on B as the store's exact lines, each once.
func TestMultiSelectedFlagsAndExpunge(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass)
	b := miIdler(t, cl.B, "INBOX")
	miAppendWatched(t, a, b, 3)

	_, err := a.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)
	miStore(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, miWait, `* 1 FETCH (FLAGS (\Seen \Recent) UID 1)`)
	b.ExpectNothing(t, quietWait)

	miStore(t, a, imap.SeqSetNum(2, 3), imap.StoreFlagsAdd, imap.FlagDeleted)
	b.Expect(t, miWait,
		`* 2 FETCH (FLAGS (\Deleted \Recent) UID 2)`,
		`* 3 FETCH (FLAGS (\Deleted \Recent) UID 3)`)
	b.ExpectNothing(t, quietWait)

	_, err = a.Expunge().Collect()
	mustOK(t, "EXPUNGE", err)
	b.Expect(t, miWait, "* 3 EXPUNGE", "* 2 EXPUNGE")
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
	if untagged := mustCmd(t, b, "FETCH 1:* (UID)"); !slices.Equal(untagged, []string{"* 1 FETCH (UID 1)"}) {
		t.Errorf("B's view after the EXPUNGE: %q, want only message 1", untagged)
	}
}

// TestMultiMailboxEvents: CREATE, UNSUBSCRIBE, SUBSCRIBE, RENAME and DELETE
// on A reach a session idling on B as LIST lines.
func TestMultiMailboxEvents(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass)
	b := miLogin(t, cl.B)
	if got := mustCmd(t, b, `LIST "" ""`); len(got) != 1 || !strings.HasPrefix(got[0], `* LIST (\Noselect) "." `) {
		t.Fatalf(`LIST "" "": %q, want the delimiter "." of go-imap-sql`, got)
	}
	mustCmd(t, b, "SELECT INBOX")
	b.Idle()

	steps := []struct {
		what string
		do   func() error
		want []string
	}{
		{"CREATE Folder", func() error { return a.Create("Folder", nil).Wait() },
			[]string{miList(`\HasNoChildren`, "Folder")}},
		// imapsql subscribes a mailbox it creates: unsubscribe first.
		{"UNSUBSCRIBE Folder", func() error { return a.Unsubscribe("Folder").Wait() },
			[]string{miList(`\HasNoChildren`, "Folder")}},
		{"SUBSCRIBE Folder", func() error { return a.Subscribe("Folder").Wait() },
			[]string{miList(`\HasNoChildren \Subscribed`, "Folder")}},
		{"RENAME Folder Renamed", func() error { return a.Rename("Folder", "Renamed", nil).Wait() },
			[]string{miList(`\NonExistent`, "Folder"), miList(`\HasNoChildren`, "Renamed")}},
		{"CREATE Par.Child", func() error { return a.Create("Par.Child", nil).Wait() },
			nil}, // lines checked below: parent and child
		{"DELETE Renamed", func() error { return a.Delete("Renamed").Wait() },
			[]string{miList(`\NonExistent`, "Renamed")}},
	}
	for _, s := range steps {
		mustOK(t, s.what, s.do())
		if s.want == nil {
			got := miCollect(t, b, time.Second, miWait)
			// The parent is created with the child: a LIST line for each,
			// with the attributes they had when created.
			if !slices.Contains(got, miList(`\HasNoChildren`, "Par.Child")) ||
				!slices.ContainsFunc(got, func(l string) bool { return strings.HasSuffix(l, ` "." "Par"`) && strings.HasPrefix(l, "* LIST (") }) ||
				len(got) != 2 {
				t.Fatalf("after %s: %q, want a LIST line for Par and one for Par.Child", s.what, got)
			}
			continue
		}
		b.Expect(t, miWait, s.want...)
		b.ExpectNothing(t, quietWait)
	}
	doneQuiet(t, b)
}

// TestMultiSMTPDelivery: mail delivered over SMTP into A reaches a session
// idling on INBOX on B as EXISTS, RECENT and FETCH, and one idling on
// Archive on B as STATUS INBOX.
func TestMultiSMTPDelivery(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	// Archive exists before b's first SELECT, created on B itself: no
	// event for it can reach b late (see miSetupArchive).
	c := miLogin(t, cl.B)
	mustCmd(t, c, "CREATE Archive")
	b := miIdler(t, cl.B, "INBOX")
	mustCmd(t, c, `SELECT "Archive"`)
	c.Idle()

	var fetches []string
	for i := 1; i <= 2; i++ {
		testkit.SendMail(t, cl.A.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message(fmt.Sprintf("delivery %d", i)))
		b.Expect(t, miWait, fmt.Sprintf("* %d EXISTS", i), fmt.Sprintf("* %d RECENT", i))
		fetches = append(fetches, miReadFetch(t, b, "SMTP delivery"))
		c.Expect(t, miWait, status("INBOX", i, i+1, i))
		b.ExpectNothing(t, quietWait)
		c.ExpectNothing(t, quietWait)
	}
	doneQuiet(t, b)
	doneQuiet(t, c)
	miCheckNewMessages(t, cl, b, "INBOX", map[int]string{1: fetches[0], 2: fetches[1]})
	if got := storeStatus(t, c, "INBOX"); got != status("INBOX", 2, 3, 2) {
		t.Errorf("STATUS INBOX on B now: %q", got)
	}
}

// TestMultiDeliveryAfterCreate: an SMTP delivery into INBOX after A created
// a mailbox gives a session idling on INBOX on B the store's EXISTS and
// RECENT and our FETCH, and nothing about the new mailbox, which did not
// change (docs/notifications.md: the delivery's reconciliation tells "the
// ones that changed"). B was told about the mailbox by its LIST line.
func TestMultiDeliveryAfterCreate(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	b := miIdler(t, cl.B, "INBOX")
	// The STATUS of an APPEND is sent after the registry has learnt the
	// account's starting state: from here on nothing is learnt late.
	miSetupArchive(t, a, b, 1)

	mustOK(t, "CREATE Later", a.Create("Later", nil).Wait())
	b.Expect(t, miWait, miList(`\HasNoChildren`, "Later"))
	b.ExpectNothing(t, quietWait)

	testkit.SendMail(t, cl.A.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("after CREATE"))
	b.Expect(t, miWait, "* 1 EXISTS", "* 1 RECENT")
	line := miReadFetch(t, b, "SMTP delivery")
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
	miCheckNewMessages(t, cl, b, "INBOX", map[int]string{1: line})
}

// TestMultiReconnect: B's broker loses its LISTEN connection while A
// creates a mailbox, appends to Archive and expunges in INBOX. After B's
// broker is back, B has a LIST line for the new mailbox and STATUS lines
// that agree with a STATUS command, never a STATUS repeated with the same
// values, and exactly the store's EXPUNGE lines.
//
// Cutting the connection alone leaves a window of a few milliseconds
// (lib/pq reconnects at once), so the first round keeps B's broker out
// while A acts: B's broker connects as a role of its own, which the test
// forbids to log in for the time. The second round only cuts the
// connection, as an operator's restart of PostgreSQL's backend would.
func TestMultiReconnect(t *testing.T) {
	t.Parallel()
	dsn := testkit.Postgres(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	exec := func(query string, args ...any) sql.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), miWait)
		defer cancel()
		res, err := db.ExecContext(ctx, query, args...)
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return res
	}
	role := "notify_b_" + strings.TrimPrefix(testkit.PostgresDBName(dsn), "notify_test_")
	exec("CREATE ROLE " + pq.QuoteIdentifier(role) + " LOGIN")
	t.Cleanup(func() {
		// After maddy has stopped (cleanups run last in, first out).
		if _, err := db.Exec("DROP ROLE IF EXISTS " + pq.QuoteIdentifier(role)); err != nil {
			t.Errorf("DROP ROLE %s: %v", role, err)
		}
	})

	brokerB := fmt.Sprintf("postgres %s user=%s application_name=%s", dsn, role, miBrokerBApp)
	cl := miStartClusterWith(t, dsn, miConfig("postgres", dsn, "postgres"), miConfig("postgres", dsn, brokerB))

	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass)
	b := miIdler(t, cl.B, "INBOX")
	miSetupArchive(t, a, b, 0)
	miAppendWatched(t, a, b, 6)
	_, err = a.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)

	cut := func() { t.Helper(); miCutBroker(t, db, dsn) }

	// check reads B's lines until quiet and holds them to the rules;
	// expunged are the EXPUNGE lines the store must send, created the
	// mailbox that must be listed.
	check := func(round string, expunged []string, created string) {
		t.Helper()
		got := miCollect(t, b, 2*time.Second, 4*miWait)
		var expunges, lists []string
		statuses := map[string][]string{} // mailbox wire form → its STATUS lines in order
		for _, l := range got {
			switch {
			case miExpungeRe.MatchString(l):
				expunges = append(expunges, l)
			case miListLineRe.MatchString(l):
				lists = append(lists, l)
			case miStatusLineRe.MatchString(l):
				mbox := miStatusLineRe.FindStringSubmatch(l)[1]
				statuses[mbox] = append(statuses[mbox], l)
			default:
				t.Errorf("%s: unexpected line %q", round, l)
			}
		}
		if !slices.Equal(expunges, expunged) {
			t.Errorf("%s: EXPUNGE lines %q, want exactly %q", round, expunges, expunged)
		}
		wantList := miList(`\HasNoChildren`, created)
		if len(lists) == 0 {
			t.Errorf("%s: no LIST line, want %q", round, wantList)
		}
		for _, l := range lists {
			if l != wantList {
				t.Errorf("%s: LIST line %q, want only %q", round, l, wantList)
			}
		}
		if len(statuses[`"Archive"`]) == 0 {
			t.Errorf("%s: no STATUS for Archive", round)
		}
		if len(statuses["INBOX"]) != 0 {
			t.Errorf("%s: STATUS for the selected INBOX: %q", round, statuses["INBOX"])
		}
		doneQuiet(t, b)
		for mbox, lines := range statuses {
			for i := 1; i < len(lines); i++ {
				if lines[i] == lines[i-1] {
					t.Errorf("%s: STATUS repeated with the same values: %q", round, lines)
				}
			}
			if fresh := storeStatus(t, b, mbox); lines[len(lines)-1] != fresh {
				t.Errorf("%s: last STATUS for %s was %q, a STATUS command says %q (all: %q)", round, mbox, lines[len(lines)-1], fresh, lines)
			}
		}
		t.Logf("%s: B got %q", round, got)
	}

	// Round 1: B's broker is kept out while A acts.
	miStore(t, a, imap.SeqSetNum(5, 6), imap.StoreFlagsAdd, imap.FlagDeleted)
	b.Expect(t, miWait, `* 5 FETCH (FLAGS (\Deleted \Recent) UID 5)`, `* 6 FETCH (FLAGS (\Deleted \Recent) UID 6)`)
	exec("ALTER ROLE " + pq.QuoteIdentifier(role) + " NOLOGIN")
	disconnects := strings.Count(cl.B.Log(), "broker disconnected")
	cut()
	// Once B's broker has noticed, no notification can reach it.
	miWaitLogCount(t, cl.B, "broker disconnected", disconnects+1)
	mustOK(t, "CREATE Fresh", a.Create("Fresh", nil).Wait())
	appendMsg(t, a, "Archive", "while B's broker is away")
	_, err = a.Expunge().Collect()
	mustOK(t, "EXPUNGE", err)
	miWaitLog(t, cl.B, "broker connection attempt failed")
	exec("ALTER ROLE " + pq.QuoteIdentifier(role) + " LOGIN")
	miWaitLog(t, cl.B, "broker reconnected")
	check("kept out", []string{"* 6 EXPUNGE", "* 5 EXPUNGE"}, "Fresh")

	// B's view of INBOX is the store's: no sequence number went wrong.
	if untagged := mustCmd(t, b, "FETCH 1:* (UID)"); !slices.Equal(untagged, []string{
		"* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)", "* 4 FETCH (UID 4)"}) {
		t.Errorf("B's view of INBOX after round 1: %q", untagged)
	}

	// Round 2: only the cut; A acts at once, while lib/pq reconnects.
	b.Idle()
	miStore(t, a, imap.SeqSetNum(3, 4), imap.StoreFlagsAdd, imap.FlagDeleted)
	b.Expect(t, miWait, `* 3 FETCH (FLAGS (\Deleted \Recent) UID 3)`, `* 4 FETCH (FLAGS (\Deleted \Recent) UID 4)`)
	reconnects := strings.Count(cl.B.Log(), "broker reconnected")
	cut()
	mustOK(t, "CREATE Fresh2", a.Create("Fresh2", nil).Wait())
	appendMsg(t, a, "Archive", "while B's broker reconnects")
	_, err = a.Expunge().Collect()
	mustOK(t, "EXPUNGE", err)
	miWaitLogCount(t, cl.B, "broker reconnected", reconnects+1)
	check("cut", []string{"* 4 EXPUNGE", "* 3 EXPUNGE"}, "Fresh2")
	if untagged := mustCmd(t, b, "FETCH 1:* (UID)"); !slices.Equal(untagged, []string{"* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)"}) {
		t.Errorf("B's view of INBOX after round 2: %q", untagged)
	}

	// The broker works after the reconnects: the next change comes as
	// an event, once.
	b.Idle()
	appendMsg(t, a, "Archive", "after the reconnects")
	b.Expect(t, miWait, status(`"Archive"`, 3, 4, 3))
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
}

// miCutBroker terminates B's broker LISTEN connection (application_name
// miBrokerBApp) in the database of dsn; it must find exactly one (B's
// broker LISTENs once lib/pq has connected).
func miCutBroker(t *testing.T, db *sql.DB, dsn string) {
	t.Helper()
	deadline := time.Now().Add(miWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), miWait)
		res, err := db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = $1 AND application_name = $2 AND query LIKE 'LISTEN%'`,
			testkit.PostgresDBName(dsn), miBrokerBApp)
		cancel()
		if err != nil {
			t.Fatalf("pg_terminate_backend: %v", err)
		}
		// pg_terminate_backend is a SELECT: RowsAffected counts its rows.
		if n, err := res.RowsAffected(); err == nil && n == 1 {
			return
		} else if err == nil && n > 1 {
			t.Fatalf("%d LISTEN connections of B's broker", n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no LISTEN connection of B's broker (application_name %s) within %v", miBrokerBApp, miWait)
		}
		<-time.After(20 * time.Millisecond) // polling interval
	}
}

// TestMultiReconnectNotify: a NOTIFY client on B, in authenticated state,
// is told NOTIFICATIONOVERFLOW when B's broker reconnects (events may have
// been lost, RFC 5465 section 5.8), then nothing until it sends NOTIFY SET
// again, after which it is told as before.
func TestMultiReconnectNotify(t *testing.T) {
	t.Parallel()
	dsn := testkit.Postgres(t)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	brokerB := fmt.Sprintf("postgres %s application_name=%s", dsn, miBrokerBApp)
	cl := miStartClusterWith(t, dsn, miConfig("postgres", dsn, "postgres"), miConfig("postgres", dsn, brokerB))

	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass)
	b := miLogin(t, cl.B)
	mustCmd(t, b, "CREATE Archive") // its own: no LIST line for it
	const set = "SET (personal (MessageNew MessageExpunge MailboxName))"
	notifyCmd(t, b, set, "OK")
	appendMsg(t, a, "Archive", "before")
	b.Expect(t, miWait, status(`"Archive"`, 1, 2, 1))

	reconnects := strings.Count(cl.B.Log(), "broker reconnected")
	miCutBroker(t, db, dsn)
	miWaitLogCount(t, cl.B, "broker reconnected", reconnects+1)
	b.Expect(t, miWait, "* OK [NOTIFICATIONOVERFLOW] notifications were lost; send NOTIFY SET again")
	appendMsg(t, a, "Archive", "while told nothing")
	mustOK(t, "CREATE Quiet", a.Create("Quiet", nil).Wait())
	b.ExpectNothing(t, time.Second)

	notifyCmd(t, b, set, "OK")
	appendMsg(t, a, "Archive", "after NOTIFY SET")
	b.Expect(t, miWait, status(`"Archive"`, 3, 4, 3))
	b.ExpectNothing(t, quietWait)
}

// TestMultiBrokerUnreachable: with PostgreSQL unreachable for the broker,
// maddy starts (SQLite store), IMAP works, notifications between sessions
// of this instance work, and the log says why the broker is down.
func TestMultiBrokerUnreachable(t *testing.T) {
	t.Parallel()
	srv := testkit.Start(t, testkit.Options{
		Config: miConfig("sqlite3", "imapsql.db", "postgres host=127.0.0.1 port=1 user=postgres sslmode=disable connect_timeout=1"),
		Ports:  []string{"imap", "smtp"},
	})
	miWaitLog(t, srv, "broker connection attempt failed")

	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := miIdler(t, srv, "INBOX")

	appendMsg(t, a, "Archive", "local")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	b.ExpectNothing(t, quietWait)

	appendMsg(t, a, "INBOX", "local too")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	line := miReadFetch(t, b, "APPEND INBOX")
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	want := fmt.Sprintf("* 1 FETCH (UID 1 FLAGS (%s) BODYSTRUCTURE %s)", miFetchItem(t, b, 1, "FLAGS"), moduleBodyStructure(t, miFetchItem(t, b, 1, "BODYSTRUCTURE")))
	if line != want {
		t.Errorf("after APPEND INBOX: %q, want %q", line, want)
	}
	if strings.Contains(srv.Log(), "broker connected") {
		t.Errorf("the broker claims to be connected to a closed port")
	}
}

// TestMultiFetchAfterLateCommit: go-imap-sql announces a new message to the
// other instances (its update pipe's pg_notify, on a connection of its own)
// before the APPEND's transaction commits. B's store then sends EXISTS and
// RECENT for a message B cannot read yet; our FETCH (UID ...) for it must
// still come once the message is committed, not be skipped.
//
// The test makes the window long and certain: it holds a SHARE lock on
// go-imap-sql's msgs table, which lets readers through but makes the
// APPEND's INSERT (which comes after the announcement) wait until the test
// lets go.
func TestMultiFetchAfterLateCommit(t *testing.T) {
	t.Parallel()
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	b := miIdler(t, cl.B, "INBOX")

	db, err := sql.Open("postgres", cl.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*miWait)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "LOCK TABLE msgs IN SHARE MODE"); err != nil {
		t.Fatalf("LOCK TABLE msgs (go-imap-sql's schema changed?): %v", err)
	}

	msg := testkit.Message("committed late")
	var appendErr error
	appended := make(chan struct{}) // closed when the APPEND has completed; then appendErr is set
	go func() {                     // the APPEND waits for the lock: not on the test's goroutine
		defer close(appended)
		cmd := a.Append("INBOX", int64(len(msg)), nil)
		if _, appendErr = cmd.Write([]byte(msg)); appendErr != nil {
			return
		}
		if appendErr = cmd.Close(); appendErr != nil {
			return
		}
		_, appendErr = cmd.Wait()
	}()
	// Runs before the client is closed, after tx.Rollback has let go.
	t.Cleanup(func() { <-appended })

	// B is told before the message is committed.
	b.Expect(t, miWait, "* 1 EXISTS", "* 1 RECENT")
	select {
	case <-appended:
		t.Fatalf("the APPEND completed while msgs was locked (%v): the test no longer holds the commit back", appendErr)
	case <-time.After(quietWait):
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-appended:
		mustOK(t, "APPEND INBOX", appendErr)
	case <-time.After(miWait):
		t.Fatalf("the APPEND did not complete within %v of releasing the lock", miWait)
	}

	line := miReadFetch(t, b, "an APPEND committed after B's EXISTS")
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
	miCheckNewMessages(t, cl, b, "INBOX", map[int]string{1: line})
}

// TestMultiBaselineWindow: a change A makes right after a session's first
// SELECT on B reaches that session. The registry learns the account's
// STATUS values in the background after that SELECT (one query per
// mailbox); a change that commits meanwhile must not be learnt as the
// starting state and so never told.
//
// The account has a few hundred mailboxes, created on B before the session
// logs in (events of B's own changes are delivered at once, so none is late),
// which makes the learning take long enough for A's APPEND to the last of
// them to land inside it.
func TestMultiBaselineWindow(t *testing.T) {
	t.Parallel()
	const boxes = 300
	cl := miStartCluster(t)
	a := testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	m := miLogin(t, cl.B)
	for i := 1; i <= boxes; i++ {
		mustCmd(t, m, fmt.Sprintf("CREATE Box%03d", i))
	}
	mustCmd(t, m, "CREATE Last")
	mustCmd(t, m, "LOGOUT")

	b := miLogin(t, cl.B)
	mustCmd(t, b, "SELECT INBOX")
	b.Idle()
	started := time.Now()
	appendMsg(t, a, "Last", "right after the SELECT")
	t.Logf("APPEND to Last completed %v after B's IDLE began", time.Since(started))
	b.Expect(t, miWait, status(`"Last"`, 1, 2, 1))
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
}

// TestMultiFilteredDelivery: mail delivered over SMTP into A that the
// store's imap_filter files into another folder reaches a session on B as
// STATUS for that folder (docs/notifications.md, "Where a mail lands: SMTP
// delivery"), also when the delivery lands right after the session's first
// SELECT on B.
//
// maddy does not tell a storage wrapper where a delivery landed: the module
// reconciles the account's mailboxes by state and compares with the values
// it learnt when the account's first session registered. That learning
// runs in the background, one STATUS query per mailbox; the account has a
// few hundred mailboxes (created on B, so no event of them is late) and the
// filter files into the last one, so that the delivery commits while the
// registry is still learning. A value learnt after the delivery must not
// hide it.
func TestMultiFilteredDelivery(t *testing.T) {
	t.Parallel()
	const boxes = 300
	dsn := testkit.Postgres(t)
	conf := miConfigStore("postgres", dsn, "\timap_filter {\n\t\tcommand /bin/echo Filed\n\t}\n", "postgres")
	cl := miStartClusterWith(t, dsn, conf, conf)

	testkit.DialClient(t, cl.A.Addr("imap"), user, pass) // creates the account
	m := miLogin(t, cl.B)
	for i := 1; i <= boxes; i++ {
		mustCmd(t, m, fmt.Sprintf("CREATE Box%03d", i))
	}
	mustCmd(t, m, "CREATE Filed")
	mustCmd(t, m, "LOGOUT")

	b := miLogin(t, cl.B)
	mustCmd(t, b, "SELECT INBOX")
	b.Idle()
	started := time.Now()
	testkit.SendMail(t, cl.A.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("filed 1"))
	t.Logf("delivery 1 completed %v after B's IDLE began", time.Since(started))
	b.Expect(t, miWait, status(`"Filed"`, 1, 2, 1))
	b.ExpectNothing(t, time.Second)

	testkit.SendMail(t, cl.A.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("filed 2"))
	b.Expect(t, miWait, status(`"Filed"`, 2, 3, 2))
	b.ExpectNothing(t, time.Second)
	doneQuiet(t, b)
	if got := storeStatus(t, b, `"Filed"`); got != status(`"Filed"`, 2, 3, 2) {
		t.Errorf("STATUS Filed on B now: %q", got)
	}
	if got := storeStatus(t, b, "INBOX"); got != status("INBOX", 0, 1, 0) {
		t.Errorf("STATUS INBOX on B now: %q: the filter did not file the messages", got)
	}
}
