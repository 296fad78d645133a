// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// maddy's CLI (imap-mboxes, imap-msgs) run next to a running server: the
// real build/maddy binary with --config and no --cfg-block, on the
// configuration the README recommends (the storage.notify block is named
// local_mailboxes, the CLI's default block, and wraps the imapsql block
// local_store). A raw IMAP session idling on INBOX with `plain_clients
// draft` is held to the exact LIST and STATUS lines of every command. With
// broker none the CLI reaches the server through the module's unix socket
// in runtime_dir; with broker postgres through PostgreSQL NOTIFY.

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

const (
	// cliBlock is the recommended name of the storage.notify block (maddy's
	// CLI default), cliInner the recommended name of the store it wraps.
	cliBlock = "local_mailboxes"
	cliInner = "local_store"
)

// cliConfig is the README's recommended configuration with the given
// storage.imapsql driver and dsn, `broker <broker>` and plain_clients draft.
func cliConfig(driver, dsn, broker string) string {
	return `
storage.imapsql ` + cliInner + ` {
	driver ` + driver + `
	dsn ` + dsn + `
}

storage.notify ` + cliBlock + ` {
	storage &` + cliInner + `
	plain_clients draft
	broker ` + broker + `
}

imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &` + cliBlock + `
}

smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &` + cliBlock + `
}
`
}

// cliSocket is the module's socket of the recommended block in runDir.
func cliSocket(runDir string) string {
	return filepath.Join(runDir, "notify-"+cliBlock+".sock")
}

// cliList is a LIST line with go-imap-sql's delimiter.
func cliList(attrs, name string) string {
	return `* LIST (` + attrs + `) "." ` + testkit.Quote(name)
}

// cliStatus is a STATUS line with the default status_items.
func cliStatus(name, values string) string {
	return `* STATUS ` + testkit.Quote(name) + ` (` + values + `)`
}

// startCLIServer starts the recommended configuration on SQLite.
func startCLIServer(t *testing.T, runDir string) *testkit.Server {
	t.Helper()
	return testkit.Start(t, testkit.Options{
		Config:     cliConfig("sqlite3", "imapsql.db", "none"),
		Ports:      []string{"imap", "smtp"},
		RuntimeDir: runDir,
	})
}

// TestCLISingleInstance: every imap-mboxes and imap-msgs command that
// changes the store, run without --cfg-block, reaches the session idling
// in the server with its exact lines. Mailbox commands and `imap-msgs add`
// are hooked exactly; the others (remove, move, copy, flags) go through
// the unwrapped go-imap-sql mailbox maddy asserts, and the server
// reconciles the account's STATUS when the CLI closes the store.
func TestCLISingleInstance(t *testing.T) {
	t.Parallel()
	srv := startCLIServer(t, "")
	if fi, err := os.Stat(cliSocket(srv.RuntimeDir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the module's socket: %v, mode %v; want a socket with mode 0600", err, fi.Mode())
	}
	b := idler(t, srv, user, "INBOX")

	cli := func(input string, args ...string) string {
		t.Helper()
		stdout, stderr, err := srv.CLIInput(input, args...)
		if err != nil {
			t.Fatalf("maddy %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
		}
		if strings.Contains(stderr, "nobody was notified") {
			t.Errorf("maddy %s did not reach the server:\n%s", strings.Join(args, " "), stderr)
		}
		return stderr
	}

	stderr := cli("", "imap-mboxes", "create", user, "Box")
	b.Expect(t, expectWait, cliList(`\HasNoChildren`, "Box"))
	b.ExpectNothing(t, quietWait)
	// maddy's own line about the update pipe is wrong for this block; the
	// module says so right before it.
	note := strings.Index(stderr, `maddy's "No update pipe support" line below does not apply to storage.notify`)
	if maddyLine := strings.Index(stderr, "No update pipe support, do not remove messages"); note < 0 || maddyLine < note {
		t.Errorf("the CLI's output does not correct maddy's update pipe line before it:\n%s", stderr)
	}

	// Into the selected mailbox: the store's EXISTS and RECENT (its update
	// pipe), the module's FETCH, no STATUS.
	srv.MustCLIInput(testkit.Message("into INBOX"), "imap-msgs", "add", user, "INBOX")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	if line, err := b.ReadLine(expectWait); err != nil || !strings.HasPrefix(line, "* 1 FETCH (UID 1 FLAGS (\\Recent) BODYSTRUCTURE (") {
		t.Errorf("after the store's EXISTS: %q %v, want the module's FETCH (UID 1 FLAGS (\\Recent) BODYSTRUCTURE (...))", line, err)
	}
	b.ExpectNothing(t, quietWait)

	cli("", "imap-mboxes", "create", user, "Archive")
	b.Expect(t, expectWait, cliList(`\HasNoChildren`, "Archive"))
	b.ExpectNothing(t, quietWait)

	if out := srv.MustCLIInput(testkit.Message("via CLI"), "imap-msgs", "add", user, "Archive"); strings.TrimSpace(out) != "1" {
		t.Errorf("imap-msgs add printed %q, want the UID 1", out)
	}
	b.Expect(t, expectWait, cliStatus("Archive", "MESSAGES 1 UIDNEXT 2 UNSEEN 1"))
	b.ExpectNothing(t, quietWait)

	cli("", "imap-msgs", "add-flags", "--uid", user, "Archive", "1", `\Seen`)
	b.Expect(t, expectWait, cliStatus("Archive", "MESSAGES 1 UIDNEXT 2 UNSEEN 0"))
	b.ExpectNothing(t, quietWait)

	cli("", "imap-msgs", "copy", "--uid", user, "Archive", "1", "Box")
	b.Expect(t, expectWait, cliStatus("Box", "MESSAGES 1 UIDNEXT 2 UNSEEN 0"))
	b.ExpectNothing(t, quietWait)

	cli("", "imap-msgs", "move", "--uid", user, "Box", "1", "Archive")
	expectAnyOrder(t, b, cliStatus("Box", "MESSAGES 0 UIDNEXT 2 UNSEEN 0"), cliStatus("Archive", "MESSAGES 2 UIDNEXT 3 UNSEEN 0"))
	b.ExpectNothing(t, quietWait)

	cli("", "imap-msgs", "remove", "--uid", "--yes", user, "Archive", "1")
	b.Expect(t, expectWait, cliStatus("Archive", "MESSAGES 1 UIDNEXT 3 UNSEEN 0"))
	b.ExpectNothing(t, quietWait)

	// Listing changes nothing and tells nothing.
	cli("", "imap-msgs", "list", user, "Archive")
	cli("", "imap-mboxes", "list", user)
	b.ExpectNothing(t, quietWait)

	cli("", "imap-mboxes", "rename", user, "Box", "Box2")
	b.Expect(t, expectWait, cliList(`\NonExistent`, "Box"), cliList(`\HasNoChildren`, "Box2"),
		cliStatus("Box2", "MESSAGES 0 UIDNEXT 2 UNSEEN 0"))
	b.ExpectNothing(t, quietWait)

	cli("", "imap-mboxes", "remove", "--yes", user, "Box2")
	b.Expect(t, expectWait, cliList(`\NonExistent`, "Box2"))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestCLIServerNotRunning: with no server, the CLI's changes are made, the
// command succeeds and its output says that nobody was notified.
func TestCLIServerNotRunning(t *testing.T) {
	t.Parallel()
	srv := testkit.Prepare(t, testkit.Options{Config: cliConfig("sqlite3", "imapsql.db", "none"), Ports: []string{"imap", "smtp"}})
	const why = "no running maddy server listens on the socket; the change is made, but nobody was notified"
	for _, args := range [][]string{
		{"imap-acct", "create", user},
		{"imap-mboxes", "create", user, "Box"},
	} {
		_, stderr, err := srv.CLI(args...)
		if err != nil {
			t.Fatalf("maddy %s without a server: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		if !strings.Contains(stderr, why) || !strings.Contains(stderr, cliSocket(srv.RuntimeDir)) {
			t.Errorf("maddy %s without a server does not say that nobody was notified (and where it looked):\n%s", strings.Join(args, " "), stderr)
		}
	}
	if got := mailboxes(srv.MustCLI("imap-mboxes", "list", user)); !hasKey(got, "Box") {
		t.Errorf("imap-mboxes list after create without a server: %v, want Box among them", got)
	}
}

// TestCLIStaleSocket: a server that crashed leaves its socket behind
// (nobody accepts on it); the next server on the same runtime_dir replaces
// it at start, and the CLI reaches the new server through it.
func TestCLIStaleSocket(t *testing.T) {
	t.Parallel()
	runDir := testkit.NewRuntimeDir(t)
	path := cliSocket(runDir)
	crashed := startCLIServer(t, runDir)
	crashed.Crash()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the crashed server left no socket behind: %v", err)
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		t.Fatal("the stale socket accepts connections")
	}

	srv := startCLIServer(t, runDir)
	if !strings.Contains(srv.Log(), "replacing a stale socket") || !strings.Contains(srv.Log(), path) {
		t.Errorf("the server's log does not say it replaced the stale socket %s", path)
	}
	b := idler(t, srv, user, "INBOX")
	srv.MustCLI("imap-mboxes", "create", user, "Box")
	b.Expect(t, expectWait, cliList(`\HasNoChildren`, "Box"))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestCLISecondServerRefuses: a second server with the same runtime_dir
// and a storage.notify block of the same name does not start, and says
// which socket is taken; the first goes on serving the CLI.
func TestCLISecondServerRefuses(t *testing.T) {
	t.Parallel()
	runDir := testkit.NewRuntimeDir(t)
	first := startCLIServer(t, runDir)
	exitErr, out := testkit.CheckConfig(t, testkit.Options{
		Config:     cliConfig("sqlite3", "imapsql.db", "none"),
		Ports:      []string{"imap", "smtp"},
		RuntimeDir: runDir,
	})
	if exitErr == nil {
		t.Fatalf("the second server exited 0:\n%s", out)
	}
	if !strings.Contains(out, cliSocket(runDir)) || !strings.Contains(out, "another running maddy listens on it") {
		t.Errorf("the second server's error does not name the socket %s that is taken:\n%s", cliSocket(runDir), out)
	}

	b := idler(t, first, user, "INBOX")
	first.MustCLI("imap-mboxes", "create", user, "Box")
	b.Expect(t, expectWait, cliList(`\HasNoChildren`, "Box"))
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestCLIPostgres: two instances on one PostgreSQL database with `broker
// postgres`; the CLI, run with A's configuration, publishes through the
// broker before it exits, and sessions idling on A and on B get the lines.
func TestCLIPostgres(t *testing.T) {
	t.Parallel()
	dsn := testkit.Postgres(t)
	conf := cliConfig("postgres", dsn, "postgres")
	c := miStartClusterWith(t, dsn, conf, conf)
	onA := idler(t, c.A, user, "INBOX")
	onB := idler(t, c.B, user, "INBOX")
	both := func(lines ...string) {
		t.Helper()
		for _, s := range []*testkit.RawConn{onA, onB} {
			expectAnyOrder(t, s, lines...)
			s.ExpectNothing(t, quietWait)
		}
	}

	_, stderr, err := c.A.CLI("imap-mboxes", "create", user, "Box")
	mustOK(t, "imap-mboxes create: "+stderr, err)
	both(cliList(`\HasNoChildren`, "Box"))

	c.A.MustCLIInput(testkit.Message("via CLI"), "imap-msgs", "add", user, "Box")
	both(cliStatus("Box", "MESSAGES 1 UIDNEXT 2 UNSEEN 1"))

	c.A.MustCLI("imap-msgs", "add-flags", "--uid", user, "Box", "1", `\Seen`)
	both(cliStatus("Box", "MESSAGES 1 UIDNEXT 2 UNSEEN 0"))

	c.A.MustCLI("imap-msgs", "remove", "--uid", "--yes", user, "Box", "1")
	both(cliStatus("Box", "MESSAGES 0 UIDNEXT 2 UNSEEN 0"))

	c.A.MustCLI("imap-mboxes", "remove", "--yes", user, "Box")
	both(cliList(`\NonExistent`, "Box"))
	doneQuiet(t, onA)
	doneQuiet(t, onB)
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

// TestCLIInnerBlockNamedDefault: with the layout where the inner block has
// the CLI's default name (local_mailboxes) and the notify block another,
// the server says at start what to pass; with --cfg-block naming the
// notify block the CLI's changes reach the session, without it (the inner
// block) only the selected mailbox's EXISTS does.
func TestCLIInnerBlockNamedDefault(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	if hint := "pass --cfg-block " + notify + " to imap-mboxes and imap-msgs"; !strings.Contains(srv.Log(), hint) {
		t.Errorf("the server's log does not say %q", hint)
	}
	b := idler(t, srv, user, "INBOX")
	srv.MustCLI("imap-mboxes", "create", "--cfg-block", notify, user, "Box")
	b.Expect(t, expectWait, cliList(`\HasNoChildren`, "Box"))
	b.ExpectNothing(t, quietWait)

	// The default block is the inner store: no module code runs there.
	srv.MustCLI("imap-mboxes", "create", user, "Quiet")
	srv.MustCLIInput(testkit.Message("via the inner block"), "imap-msgs", "add", user, "INBOX")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	if line, err := b.ReadLine(expectWait); err != nil || !strings.HasPrefix(line, "* 1 FETCH (UID 1 ") {
		t.Errorf("after the store's EXISTS: %q %v, want the module's FETCH (UID 1 ...)", line, err)
	}
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}
