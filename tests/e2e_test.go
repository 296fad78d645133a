// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests: each test starts its own maddy process (the full maddy
// v0.8.2 CLI with storage.notify linked in, see internal/testkit.Binary) and
// talks to it over IMAP, SMTP and the maddy CLI. Where a test states what
// stock maddy does, it runs the same scenario against the bare
// storage.imapsql ("bare") and through storage.notify ("notify") and holds
// both to the same exact lines.

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

const (
	// user is the account the tests log in as (auth dummy accepts any
	// password; imapsql creates the account on first login).
	user = "user@maddy.test"
	pass = "any"

	// expectWait bounds the wait for a line the test expects;
	// quietWait is how long a test listens to assert that nothing more
	// comes.
	expectWait = 5 * time.Second
	quietWait  = 300 * time.Millisecond

	bare   = "local_mailboxes"    // the storage.imapsql block
	notify = "notified_mailboxes" // the storage.notify block wrapping it
)

// config returns a maddy.conf body whose IMAP and SMTP endpoints use the
// storage block named endpointStore. The storage.notify block is declared
// only when an endpoint uses it: maddy refuses to start with an unused
// configuration block.
func config(endpointStore string) string {
	var b strings.Builder
	b.WriteString(`
storage.imapsql local_mailboxes {
	driver sqlite3
	dsn imapsql.db
}
`)
	if endpointStore == notify {
		// These tests prove transparency: the wrapper must give exactly
		// the bare store's lines. Its own additions are switched off —
		// the FETCH (UID ...) after EXISTS/RECENT of new messages, the
		// STATUS of other mailboxes and the LIST of mailbox events —
		// while the message events still flow through the hooks and
		// the registry. notify_e2e_test.go tests the additions.
		b.WriteString(`
storage.notify notified_mailboxes {
	storage &local_mailboxes
	new_message_fetch
	status_mailboxes none
	events MessageNew MessageAppend MessageExpunge FlagChange
}
`)
	}
	fmt.Fprintf(&b, `
imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &%[1]s
}

smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &%[1]s
}
`, endpointStore)
	return b.String()
}

// start starts maddy with both endpoints on endpointStore.
func start(t *testing.T, endpointStore string) *testkit.Server {
	t.Helper()
	return testkit.Start(t, testkit.Options{
		Config: config(endpointStore),
		Ports:  []string{"imap", "smtp"},
	})
}

// bareAndNotify runs scenario as the parallel subtests "bare" and "notify",
// each against its own maddy whose endpoints use that store. block is the
// storage block the endpoints use.
func bareAndNotify(t *testing.T, scenario func(t *testing.T, srv *testkit.Server, block string)) {
	for _, c := range []struct{ name, block string }{{"bare", bare}, {"notify", notify}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			scenario(t, start(t, c.block), c.block)
		})
	}
}

// appendMsg appends testkit.Message(subject) to mbox through c.
func appendMsg(t *testing.T, c *imapclient.Client, mbox, subject string) {
	t.Helper()
	appendRaw(t, c, mbox, testkit.Message(subject))
}

// appendRaw appends msg to mbox through c. SQLite answers "database is
// locked" when two connections write at once; that is the store's answer
// to the client, which the module does not hide (docs/guarantees.md), not
// something these tests check, so such an APPEND is repeated (a few times,
// with a short pause).
func appendRaw(t *testing.T, c *imapclient.Client, mbox, msg string) {
	t.Helper()
	if err := testkit.RetryLocked(5, func() error { return appendOnce(c, mbox, msg) }); err != nil {
		t.Fatalf("APPEND %s: %v", mbox, err)
	}
}

func appendOnce(c *imapclient.Client, mbox, msg string) error {
	cmd := c.Append(mbox, int64(len(msg)), nil)
	if _, err := cmd.Write([]byte(msg)); err != nil {
		return err
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	_, err := cmd.Wait()
	return err
}

// dated returns msg with its Date header replaced by date.
func dated(msg, date string) string {
	return regexp.MustCompile(`(?m)^Date: .*\r$`).ReplaceAllLiteralString(msg, "Date: "+date+"\r")
}

// selectIdle logs b in as user, selects mailbox and starts IDLE.
func selectIdle(t *testing.T, b *testkit.RawConn, mailbox string) {
	t.Helper()
	b.Login(user, pass)
	if _, tagged := b.Cmd("SELECT " + mailbox); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("SELECT %s: %s", mailbox, tagged)
	}
	b.Idle()
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestCapabilityUnchanged: the wrapper forwards every optional interface
// maddy and go-imap look for, so what a client is told before and after
// LOGIN is byte for byte what the bare store gives, with one addition:
// after LOGIN (LOGIN's CAPABILITY code and the CAPABILITY command) the
// wrapped server advertises NOTIFY (RFC 5465), once, and nothing else
// new; before LOGIN it does not.
func TestCapabilityUnchanged(t *testing.T) {
	t.Parallel()
	type transcript struct {
		greeting, capBefore, login, capAfter string
	}
	talk := func(srv *testkit.Server) transcript {
		b := testkit.DialRaw(t, srv.Addr("imap"))
		var tr transcript
		tr.greeting = b.Greeting
		untagged, tagged := b.Cmd("CAPABILITY")
		tr.capBefore = strings.Join(append(untagged, tagged), "\n")
		untagged, tagged = b.Cmd("LOGIN " + testkit.Quote(user) + " " + testkit.Quote(pass))
		tr.login = strings.Join(append(untagged, tagged), "\n")
		untagged, tagged = b.Cmd("CAPABILITY")
		tr.capAfter = strings.Join(append(untagged, tagged), "\n")
		return tr
	}
	got := talk(start(t, notify))
	want := talk(start(t, bare))
	for _, after := range []*string{&got.login, &got.capAfter} {
		if n := strings.Count(*after, " NOTIFY "); n != 1 {
			t.Errorf("through storage.notify, %q advertises NOTIFY %d times, want once", *after, n)
		}
		*after = strings.Replace(*after, " NOTIFY ", " ", 1)
	}
	if got != want {
		t.Errorf("IMAP transcript through storage.notify differs from the bare store\n got: %+v\nwant: %+v", got, want)
	}

	// What stock maddy 0.8.2 with storage.imapsql advertises after LOGIN.
	// (It does not advertise SPECIAL-USE even though imapsql lists it, and
	// APPENDLIMIT carries no value.)
	caps := strings.Fields(strings.SplitN(got.capAfter, "\n", 2)[0])
	for _, c := range []string{"IMAP4rev1", "I18NLEVEL=1", "SORT", "THREAD=ORDEREDSUBJECT", "MOVE",
		"APPENDLIMIT", "NAMESPACE", "CHILDREN", "UNSELECT", "IDLE"} {
		if !slices.Contains(caps, c) {
			t.Errorf("CAPABILITY after LOGIN lacks %s: %s", c, got.capAfter)
		}
	}
}

// TestIdleSeesSelectedMailboxChanges: what a session idling on INBOX sees
// of another session's APPEND, STORE and EXPUNGE is exactly what stock
// maddy sends; MOVE, SORT and THREAD work through the wrapper.
func TestIdleSeesSelectedMailboxChanges(t *testing.T) {
	t.Parallel()
	bareAndNotify(t, func(t *testing.T, srv *testkit.Server, _ string) {
		a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
		// Created before B logs in, so B is not told about it.
		mustOK(t, "CREATE Other", a.Create("Other", nil).Wait())

		b := testkit.DialRaw(t, srv.Addr("imap"))
		selectIdle(t, b, "INBOX")

		// A appends while it has never selected INBOX, so \Recent goes
		// to the only session that has INBOX selected, B. (UNSELECT in
		// maddy 0.8.2's go-imap fork does not close the mailbox handle:
		// after SELECT INBOX + UNSELECT, A's handle could claim it.)
		appendMsg(t, a, "INBOX", "one")
		b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
		b.ExpectNothing(t, quietWait)
		appendMsg(t, a, "INBOX", "two")
		b.Expect(t, expectWait, "* 2 EXISTS", "* 2 RECENT")
		appendMsg(t, a, "INBOX", "three")
		b.Expect(t, expectWait, "* 3 EXISTS", "* 3 RECENT")
		b.ExpectNothing(t, quietWait)

		_, err := a.Select("INBOX", nil).Wait()
		mustOK(t, "SELECT INBOX", err)
		mustOK(t, "STORE 1 +FLAGS (\\Seen)", a.Store(imap.SeqSetNum(1), &imap.StoreFlags{
			Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
		}, nil).Close())
		b.Expect(t, expectWait, `* 1 FETCH (FLAGS (\Seen \Recent) UID 1)`)
		b.ExpectNothing(t, quietWait)

		mustOK(t, "STORE 2:3 +FLAGS (\\Deleted)", a.Store(imap.SeqSetNum(2, 3), &imap.StoreFlags{
			Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted},
		}, nil).Close())
		b.Expect(t, expectWait,
			`* 2 FETCH (FLAGS (\Deleted \Recent) UID 2)`,
			`* 3 FETCH (FLAGS (\Deleted \Recent) UID 3)`)
		b.ExpectNothing(t, quietWait)
		expunged, err := a.Expunge().Collect()
		mustOK(t, "EXPUNGE", err)
		if !slices.Equal(expunged, []uint32{3, 2}) {
			t.Errorf("A's EXPUNGE reported %v, want [3 2]", expunged)
		}
		// One EXPUNGE per message, highest first: a duplicate would
		// shift B's sequence numbers.
		b.Expect(t, expectWait, "* 3 EXPUNGE", "* 2 EXPUNGE")
		b.ExpectNothing(t, quietWait)
		doneQuiet(t, b)

		// MOVE needs the wrapper's mailbox to forward MoveMessages
		// (else the server answers NO).
		_, err = a.Move(imap.SeqSetNum(1), "Other").Wait()
		mustOK(t, "MOVE 1 Other", err)
		untagged, tagged := b.Cmd("NOOP")
		if !strings.HasPrefix(tagged, "OK") || !slices.Contains(untagged, "* 1 EXPUNGE") {
			t.Errorf("B's NOOP after the MOVE: %q %q, want * 1 EXPUNGE among the lines", untagged, tagged)
		}
		for _, l := range untagged {
			if regexp.MustCompile(`^\* \d+ (EXISTS|EXPUNGE|RECENT)$`).MatchString(l) && l != "* 1 EXPUNGE" {
				t.Errorf("B's NOOP after the MOVE: unexpected %q", l)
			}
		}
		st, err := a.Status("Other", &imap.StatusOptions{NumMessages: true}).Wait()
		mustOK(t, "STATUS Other", err)
		if st.NumMessages == nil || *st.NumMessages != 1 {
			t.Errorf("Other holds %v messages after the MOVE, want 1", st.NumMessages)
		}

		// SORT and THREAD in Other, which now holds 1 "one" (Jan 2);
		// add 2 "b" (Jan 3) and 3 "Re: one" (Jan 4). Distinct dates keep
		// THREAD's order of threads well defined.
		appendRaw(t, a, "Other", dated(testkit.Message("b"), "Tue, 03 Jan 2006 15:04:05 +0000"))
		appendRaw(t, a, "Other", dated(testkit.Message("Re: one"), "Wed, 04 Jan 2006 15:04:05 +0000"))
		c := testkit.DialRaw(t, srv.Addr("imap"))
		c.Login(user, pass)
		if _, tagged := c.Cmd("SELECT Other"); !strings.HasPrefix(tagged, "OK") {
			t.Fatalf("SELECT Other: %s", tagged)
		}
		for _, tc := range []struct{ cmd, want string }{
			{"SORT (SUBJECT) UTF-8 ALL", "* SORT 2 1 3"},
			{"SORT (REVERSE DATE) UTF-8 ALL", "* SORT 3 2 1"},
			// Stock maddy (go-imap-sortthread) puts a space between
			// threads.
			{"THREAD ORDEREDSUBJECT UTF-8 ALL", "* THREAD (1 3) (2)"},
		} {
			untagged, tagged := c.Cmd(tc.cmd)
			if !strings.HasPrefix(tagged, "OK") || !slices.Equal(untagged, []string{tc.want}) {
				t.Errorf("%s: %q %q, want %q and OK", tc.cmd, untagged, tagged, tc.want)
			}
		}
	})
}

// TestSMTPDeliveryThroughWrapper: a message delivered over SMTP to
// deliver_to &notified_mailboxes lands in INBOX and a session idling there
// is told at once.
func TestSMTPDeliveryThroughWrapper(t *testing.T) {
	t.Parallel()
	bareAndNotify(t, func(t *testing.T, srv *testkit.Server, _ string) {
		b := testkit.DialRaw(t, srv.Addr("imap"))
		selectIdle(t, b, "INBOX") // the login creates the account

		testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("Delivered over SMTP"))
		b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
		b.ExpectNothing(t, quietWait)
		doneQuiet(t, b)

		untagged, tagged := b.Cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
		if !strings.HasPrefix(tagged, "OK") || len(untagged) != 1 ||
			!strings.Contains(untagged[0], "Subject: Delivered over SMTP\r\n") {
			t.Errorf("FETCH 1: %q %q", untagged, tagged)
		}
	})
}

// TestUpdatePipeFromCLI: a message added by another process (maddy
// imap-msgs add) reaches a session idling in the server, whether the CLI
// opens the storage.notify block or the inner block. Both need the wrapper
// to switch on the inner store's update pipe in the server (replicate mode;
// the IMAP endpoint cannot do it through the wrapper); the first also needs
// it to do so in the CLI process (push mode).
func TestUpdatePipeFromCLI(t *testing.T) {
	t.Parallel()
	bareAndNotify(t, func(t *testing.T, srv *testkit.Server, block string) {
		b := testkit.DialRaw(t, srv.Addr("imap"))
		selectIdle(t, b, "INBOX")

		for i, cliBlock := range []string{block, bare} {
			n := i + 1
			srv.MustCLIInput(testkit.Message(fmt.Sprintf("via CLI %d", n)),
				"imap-msgs", "add", "--cfg-block", cliBlock, user, "INBOX")
			b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", n), fmt.Sprintf("* %d RECENT", n))
			b.ExpectNothing(t, quietWait)
		}
		doneQuiet(t, b)
	})
}

// TestManageThroughWrapper: the account and mailbox management of the maddy
// CLI works with --cfg-block notified_mailboxes and agrees with the inner
// block.
func TestManageThroughWrapper(t *testing.T) {
	t.Parallel()
	srv := start(t, notify)
	const alice, bob = "alice@maddy.test", "bob@maddy.test"

	// both runs a CLI command through the wrapper and the same command on
	// the inner block and requires the same standard output.
	both := func(args ...string) string {
		t.Helper()
		cmd := args[:2]
		rest := args[2:]
		viaWrapper := srv.MustCLI(slices.Concat(cmd, []string{"--cfg-block", notify}, rest)...)
		viaInner := srv.MustCLI(slices.Concat(cmd, []string{"--cfg-block", bare}, rest)...)
		if viaWrapper != viaInner {
			t.Errorf("maddy %s: through the wrapper\n%s\ndirectly\n%s", strings.Join(args, " "), viaWrapper, viaInner)
		}
		return viaWrapper
	}

	_, stderr, err := srv.CLI("imap-acct", "create", "--cfg-block", notify, alice)
	mustOK(t, "imap-acct create "+alice+": "+stderr, err)
	if strings.Contains(stderr, "SPECIAL-USE") {
		t.Errorf("imap-acct create through the wrapper lost SPECIAL-USE: %s", stderr)
	}
	srv.MustCLI("imap-acct", "create", "--cfg-block", notify, "--no-specialuse", bob)
	if got := strings.Fields(both("imap-acct", "list")); !slices.Equal(got, []string{alice, bob}) {
		t.Errorf("imap-acct list: %q, want [%s %s]", got, alice, bob)
	}

	srv.MustCLI("imap-mboxes", "create", "--cfg-block", notify, alice, "Projects")
	srv.MustCLI("imap-mboxes", "create", "--cfg-block", notify, "--special", "archive", bob, "Old")
	aliceBoxes := mailboxes(both("imap-mboxes", "list", alice))
	for name, attr := range map[string]string{"INBOX": "", "Projects": "", "Sent": `\Sent`, "Trash": `\Trash`,
		"Junk": `\Junk`, "Drafts": `\Drafts`, "Archive": `\Archive`} {
		attrs, ok := aliceBoxes[name]
		if !ok || (attr != "" && !slices.Contains(attrs, attr)) {
			t.Errorf("imap-mboxes list %s: %s has %q (present: %v), want %q among them", alice, name, attrs, ok, attr)
		}
	}
	if attrs := mailboxes(both("imap-mboxes", "list", bob))["Old"]; !slices.Contains(attrs, `\Archive`) {
		t.Errorf("imap-mboxes list %s: Old has %q, want \\Archive among them", bob, attrs)
	}

	// The IMAP endpoint on the wrapper sees what the CLI made.
	c := testkit.DialRaw(t, srv.Addr("imap"))
	c.Login(alice, pass)
	untagged, tagged := c.Cmd(`LIST "" "*"`)
	if !strings.HasPrefix(tagged, "OK") || !slices.ContainsFunc(untagged, func(l string) bool {
		return strings.HasPrefix(l, "* LIST (") && strings.HasSuffix(l, ` "Projects"`)
	}) {
		t.Errorf(`LIST "" "*" as %s: %q %q`, alice, untagged, tagged)
	}
	c.Close()

	srv.MustCLI("imap-acct", "appendlimit", "--cfg-block", notify, "--value", "4096", alice)
	if got := both("imap-acct", "appendlimit", alice); !strings.Contains(got, "4096") {
		t.Errorf("imap-acct appendlimit %s: %q, want 4096", alice, got)
	}

	srv.MustCLI("imap-acct", "remove", "--cfg-block", notify, "--yes", bob)
	if got := strings.Fields(both("imap-acct", "list")); !slices.Equal(got, []string{alice}) {
		t.Errorf("imap-acct list after removing %s: %q, want [%s]", bob, got, alice)
	}
}

// TestConfigErrorsEndToEnd: a broken storage.notify block stops the maddy
// process with a message that names the offending directive and says where
// it is (the block's name or maddy.conf:LINE). module_test.go's
// TestConfigErrors checks Init in process; this checks what an operator
// sees.
func TestConfigErrorsEndToEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		block     string // the storage.notify bad_wrapper block and what it needs
		directive string // the directive the message must name
		mention   string // a further word the message must contain
		line      string // the line of block that a file:line may point at, besides its first
	}{{
		name:      "missing storage",
		block:     "storage.notify bad_wrapper {\n}\n",
		directive: "storage",
	}, {
		// table.static would be the obvious non-storage, but maddy
		// 0.8.2 registers it under its module name (its InstanceName
		// returns "table.static"), so &some_table is "unknown".
		name:      "not a storage",
		block:     "table.chain some_table {\n\tstep identity\n}\nstorage.notify bad_wrapper {\n\tstorage &some_table\n}\n",
		directive: "storage",
		mention:   "some_table",
		line:      "\tstorage &some_table",
	}, {
		name:      "unknown directive",
		block:     "storage.notify bad_wrapper {\n\tstorage &local_mailboxes\n\tbogus 1\n}\n",
		directive: "bogus",
		line:      "\tbogus 1",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := `
storage.imapsql local_mailboxes {
	driver sqlite3
	dsn imapsql.db
}
` + tc.block + `
imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &bad_wrapper
}
smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &local_mailboxes
}
`
			exitErr, out := testkit.CheckConfig(t, testkit.Options{Config: body, Ports: []string{"imap", "smtp"}})
			if exitErr == nil {
				t.Fatalf("maddy accepted the configuration and exited 0:\n%s", out)
			}
			// The directive as a word of its own ("storage", not the
			// "storage" of "storage.notify").
			if !regexp.MustCompile(`(^|[^.\w])` + tc.directive + `([^.\w]|$)`).MatchString(out) {
				t.Errorf("the message does not name the directive %q:\n%s", tc.directive, out)
			}
			if tc.mention != "" && !strings.Contains(out, tc.mention) {
				t.Errorf("the message does not mention %q:\n%s", tc.mention, out)
			}
			lines := []int{lineOf(t, body, "storage.notify bad_wrapper {")}
			if tc.line != "" {
				lines = append(lines, lineOf(t, body, tc.line))
			}
			if !strings.Contains(out, "bad_wrapper") && !mentionsLine(out, lines) {
				t.Errorf("the message names neither the block bad_wrapper nor maddy.conf:%v:\n%s", lines, out)
			}
			if strings.Contains(out, "panic") {
				t.Errorf("maddy panicked:\n%s", out)
			}
		})
	}
}

// mailboxes parses the output of maddy imap-mboxes list ("NAME\t[ATTRS]"
// or "NAME" per line) into names and their attributes.
func mailboxes(out string) map[string][]string {
	m := make(map[string][]string)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, attrs, _ := strings.Cut(line, "\t")
		m[name] = strings.Fields(strings.Trim(attrs, "[]"))
	}
	return m
}

// lineOf returns the line of maddy.conf that holds the line of body equal
// to s.
func lineOf(t *testing.T, body, s string) int {
	t.Helper()
	i := slices.Index(strings.Split(body, "\n"), s)
	if i < 0 {
		t.Fatalf("no line %q in the configuration", s)
	}
	return i + 1 + testkit.PreambleLines
}

// mentionsLine reports whether out has "maddy.conf:N" for one of lines.
func mentionsLine(out string, lines []int) bool {
	for _, n := range lines {
		if regexp.MustCompile(`maddy\.conf:` + fmt.Sprint(n) + `\b`).MatchString(out) {
			return true
		}
	}
	return false
}
