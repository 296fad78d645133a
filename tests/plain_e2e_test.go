// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of what clients that do not send NOTIFY are told under
// each plain_clients value, and of the IDLE keepalive.

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// otherDevice makes, from a go-imap v2 session of user, every change that
// the draft maps to STATUS or LIST for the other sessions: a new folder,
// a message filed into another folder, a rename, a subscription and a
// deletion. It needs the folder Archive.
func otherDevice(t *testing.T, srv *testkit.Server) {
	t.Helper()
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Fresh", a.Create("Fresh", nil).Wait())
	appendMsg(t, a, "Archive", "filed")
	mustOK(t, "RENAME Fresh Fresher", a.Rename("Fresh", "Fresher", nil).Wait())
	mustOK(t, "SUBSCRIBE Fresher", a.Subscribe("Fresher").Wait())
	mustOK(t, "DELETE Fresher", a.Delete("Fresher").Wait())
	appendMsg(t, a, "INBOX", "new")
}

// TestPlainSelectedDefault: with the default configuration, a plain client
// in IDLE and a plain client polling with NOOP get the selected mailbox's
// lines (the store's EXISTS and RECENT, the module's FETCH with UID) and no
// STATUS, LIST or OLDNAME, whatever the other device does.
func TestPlainSelectedDefault(t *testing.T) {
	t.Parallel()
	srv := testkit.Start(t, testkit.Options{Config: notifyConfigPlain(""), Ports: []string{"imap", "smtp"}})
	setup := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", setup.Create("Archive", nil).Wait())
	idle := idler(t, srv, user, "INBOX")
	poll := rawLogin(t, srv, user)
	rawSelect(t, poll, "INBOX")

	otherDevice(t, srv)
	// Each session gets EXISTS and the module's FETCH of the new message;
	// one of them (the first the store tells) also RECENT.
	idleLines := readLines(t, idle, expectWait, 2)
	if idleLines[1] == "* 1 RECENT" {
		idleLines = append(idleLines, readLines(t, idle, expectWait, 1)...)
	}
	idle.ExpectNothing(t, quietWait)
	doneQuiet(t, idle)
	pollLines := noopUntil(t, poll, 2)
	recent := 0
	for who, got := range map[string][]string{"idling session": idleLines, "polling session": pollLines} {
		if len(got) == 3 && got[1] == "* 1 RECENT" {
			recent++
			got = []string{got[0], got[2]}
		}
		if len(got) != 2 || got[0] != "* 1 EXISTS" || !newFetchRe.MatchString(got[1]) || !strings.HasPrefix(got[1], "* 1 FETCH (UID 1 ") {
			t.Errorf("%s: %q, want * 1 EXISTS, [* 1 RECENT,] * 1 FETCH (UID 1 ...) only", who, got)
		}
	}
	if recent != 1 {
		t.Errorf("* 1 RECENT went to %d sessions, want 1", recent)
	}
	if untagged := mustCmd(t, poll, "NOOP"); len(untagged) != 0 {
		t.Errorf("a further NOOP: %q, want nothing", untagged)
	}
	// The client that IDLEs again is told nothing that waited.
	idle.Idle()
	idle.ExpectNothing(t, quietWait)
	doneQuiet(t, idle)
}

// TestPlainNone: plain_clients none is stock maddy: the store's lines only.
func TestPlainNone(t *testing.T) {
	t.Parallel()
	srv := startNotify(t, "plain_clients none")
	setup := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", setup.Create("Archive", nil).Wait())
	idle := idler(t, srv, user, "INBOX")
	otherDevice(t, srv)
	idle.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	idle.ExpectNothing(t, quietWait)
	doneQuiet(t, idle)
}

// TestPlainDraftOnlyInIdle: under plain_clients draft, STATUS and LIST go
// out only while the client is in IDLE; at NOOP it gets the selected
// mailbox's lines only, and what waited comes at its next IDLE. A rename
// is the old name's \NonExistent and the new name's LIST.
func TestPlainDraftOnlyInIdle(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	setup := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", setup.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")

	otherDevice(t, srv)
	got := noopUntil(t, b, 3)
	if len(got) != 3 || got[0] != "* 1 EXISTS" || got[1] != "* 1 RECENT" || !newFetchRe.MatchString(got[2]) {
		t.Fatalf("NOOPs: %q, want * 1 EXISTS, * 1 RECENT, * 1 FETCH (UID 1 ...) only", got)
	}
	<-time.After(quietWait) // what the draft maps to STATUS and LIST is due now
	if untagged := mustCmd(t, b, "NOOP"); len(untagged) != 0 {
		t.Fatalf("NOOP: %q, want nothing (STATUS and LIST wait for IDLE)", untagged)
	}
	b.Idle()
	// The STATUS of Archive may come before or after the LIST lines.
	lines := expectAnyOrder(t, b,
		fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresh"`, d),
		fmt.Sprintf(`* LIST (\NonExistent) %s "Fresh"`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresher"`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Fresher"`, d),
		fmt.Sprintf(`* LIST (\NonExistent) %s "Fresher"`, d),
		status(`"Archive"`, 1, 2, 1),
	)
	var list []string
	for _, l := range lines {
		if strings.HasPrefix(l, "* LIST") {
			list = append(list, l)
		}
		if strings.Contains(l, "OLDNAME") {
			t.Errorf("LIST extended data to a plain client: %q", l)
		}
	}
	want := []string{
		fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresh"`, d),
		fmt.Sprintf(`* LIST (\NonExistent) %s "Fresh"`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresher"`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Fresher"`, d),
		fmt.Sprintf(`* LIST (\NonExistent) %s "Fresher"`, d),
	}
	if !slices.Equal(list, want) {
		t.Errorf("LIST lines in this order: %q, want %q", list, want)
	}
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestIdleKeepalive: a client in IDLE that is written nothing gets
// "* OK Still here" every idle_keepalive; with 0 it gets nothing.
func TestIdleKeepalive(t *testing.T) {
	t.Parallel()
	t.Run("1s", func(t *testing.T) {
		t.Parallel()
		srv := testkit.Start(t, testkit.Options{
			Config: notifyConfig("idle_keepalive 1s") + metricsEndpoint,
			Ports:  []string{"imap", "smtp", "metrics"},
		})
		c := idler(t, srv, user, "INBOX")
		start := time.Now()
		c.Expect(t, 3*time.Second, "* OK Still here")
		first := time.Since(start)
		c.Expect(t, 3*time.Second, "* OK Still here")
		if first < 900*time.Millisecond {
			t.Errorf("first keepalive after %v, want about 1s", first)
		}
		doneQuiet(t, c)
		if n := scrapeMetrics(t, srv).value(mResponsesPushed, "kind", "keepalive"); n != 2 {
			t.Errorf("%s{kind=\"keepalive\"} = %v, want 2", mResponsesPushed, n)
		}
		// Not in IDLE: nothing, however long.
		<-time.After(1500 * time.Millisecond)
		if untagged := mustCmd(t, c, "NOOP"); len(untagged) != 0 {
			t.Errorf("NOOP after a pause outside IDLE: %q", untagged)
		}
	})
	t.Run("0", func(t *testing.T) {
		t.Parallel()
		srv := startNotify(t, "idle_keepalive 0")
		c := idler(t, srv, user, "INBOX")
		c.ExpectNothing(t, 2500*time.Millisecond)
		doneQuiet(t, c)
	})
}

// TestPlainDraftNothingAfterDone: under plain_clients draft, while another
// session keeps creating and deleting folders, a client that ends IDLE
// with DONE and a pipelined NOOP is never written a STATUS or LIST between
// IDLE's tagged OK and NOOP's: whatever was due then waits for the next
// IDLE, and every line is written exactly once.
func TestPlainDraftNothingAfterDone(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := rawLogin(t, srv, user)
	rawSelect(t, b, "INBOX")

	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	w := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	go func() {
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			name := fmt.Sprintf("Churn%d", i%4)
			if err := w.Create(name, nil).Wait(); err != nil {
				writerDone <- fmt.Errorf("CREATE %s: %w", name, err)
				return
			}
			if err := w.Delete(name).Wait(); err != nil {
				writerDone <- fmt.Errorf("DELETE %s: %w", name, err)
				return
			}
		}
		writerDone <- nil
	}()

	told := 0
	for round := 0; round < 60; round++ {
		b.Idle()
		// In IDLE for a moment: some lines arrive, more are on their way.
		deadline := time.Now().Add(time.Duration(5+round%20) * time.Millisecond)
		for {
			line, err := b.ReadLine(time.Until(deadline))
			if err != nil {
				break
			}
			if strings.HasPrefix(line, "* LIST") {
				told++
			}
		}
		idleTag := b.DonePipelined(fmt.Sprintf("n%d NOOP", round))
		afterOK := false
		for {
			line, err := b.ReadLine(expectWait)
			if err != nil {
				t.Fatalf("round %d: waiting for n%d OK: %v", round, round, err)
			}
			switch {
			case strings.HasPrefix(line, idleTag+" "):
				if !strings.HasPrefix(line, idleTag+" OK") {
					t.Fatalf("round %d: %s", round, line)
				}
				afterOK = true
				continue
			case strings.HasPrefix(line, fmt.Sprintf("n%d ", round)):
				if !afterOK {
					t.Fatalf("round %d: NOOP answered before IDLE: %q", round, line)
				}
			case afterOK && (strings.HasPrefix(line, "* LIST") || strings.HasPrefix(line, "* STATUS")):
				t.Fatalf("round %d: %q between IDLE's OK and NOOP's", round, line)
			default:
				if strings.HasPrefix(line, "* LIST") {
					told++
				}
				continue
			}
			break
		}
	}
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	if told == 0 {
		t.Fatal("no LIST line in any IDLE: the churn never reached the listener")
	}
	t.Logf("%d LIST lines in 60 IDLEs, none after DONE", told)
}
