// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"net/mail"
	"strings"
	"testing"
	"time"
)

// bareConfig uses only stock maddy modules, so these tests also run against
// a stock maddy binary ($MADDY_NOTIFY_BINARY=/path/to/maddy).
const bareConfig = `
storage.imapsql local_mailboxes {
	driver sqlite3
	dsn imapsql.db
}
imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &local_mailboxes
}
smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to &local_mailboxes
}
`

func TestServer(t *testing.T) {
	t.Parallel()
	srv := Start(t, Options{Config: bareConfig, Ports: []string{"imap", "smtp"}})
	if srv.Port("imap") == srv.Port("smtp") || srv.Addr("imap") == "" {
		t.Fatalf("ports: imap %d smtp %d", srv.Port("imap"), srv.Port("smtp"))
	}

	const user = "user@maddy.test"
	b := DialRaw(t, srv.Addr("imap"))
	b.Login(user, "any")
	if _, tagged := b.Cmd("SELECT INBOX"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("SELECT INBOX: %s", tagged)
	}

	SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, Message("over SMTP"))
	out := srv.MustCLIInput(Message("from the CLI"), "imap-msgs", "add", user, "INBOX")
	if strings.TrimSpace(out) != "2" {
		t.Errorf("imap-msgs add printed %q, want the UID 2", out)
	}
	if out := srv.MustCLI("imap-acct", "list"); strings.TrimSpace(out) != user {
		t.Errorf("imap-acct list printed %q, want %q", out, user)
	}
	if _, _, err := srv.CLI("imap-acct", "list", "--cfg-block", "no_such_block"); err == nil {
		t.Errorf("CLI with an unknown block succeeded")
	}

	a := DialClient(t, srv.Addr("imap"), user, "any")
	sel, err := a.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 2 {
		t.Errorf("INBOX has %d messages, want 2", sel.NumMessages)
	}

	if _, tagged := b.Cmd("NOOP"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("NOOP: %s", tagged)
	}
	if !strings.Contains(srv.Log(), "listening on") {
		t.Errorf("Log() lacks maddy's startup lines:\n%s", srv.Log())
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	exitErr, out := CheckConfig(t, Options{Config: bareConfig + "\nbogus_global 1\n", Ports: []string{"imap", "smtp"}})
	if exitErr == nil {
		t.Fatalf("maddy exited with status 0:\n%s", out)
	}
	if !strings.Contains(out, "bogus_global") {
		t.Errorf("output does not name the directive:\n%s", out)
	}
}

func TestStartReportsEarlyExit(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ft := runFakeT(t, func(ft *fakeTB) {
		Start(ft, Options{Config: bareConfig + "\nbogus_global 1\n", Ports: []string{"imap", "smtp"}})
	})
	if !ft.failed || !strings.Contains(ft.msg, "maddy exited before port") {
		t.Fatalf("Start with a broken config: failed=%v msg=%q", ft.failed, ft.msg)
	}
	if d := time.Since(start); d > StartTimeout/2 {
		t.Errorf("Start took %v to notice the exit", d)
	}
}

func TestMessage(t *testing.T) {
	m := Message("Hello, world")
	if strings.Count(m, "\n") != strings.Count(m, "\r\n") || !strings.HasSuffix(m, "\r\n") {
		t.Fatalf("line ends are not all CRLF: %q", m)
	}
	msg, err := mail.ReadMessage(strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("Subject"); got != "Hello, world" {
		t.Errorf("Subject %q", got)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if Message("Hello, world") != m || Message("other") == m {
		t.Errorf("Message is not a function of the subject")
	}
}
