// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// newPlainRegistry returns a registry whose plain clients are told what
// plain says, closed when the test ends.
func newPlainRegistry(t *testing.T, plain mapping.PlainClients, open Opener) (*Registry, *testkit.LogCapture) {
	t.Helper()
	logger, logs := testkit.NewLog()
	p := mapping.DefaultPolicy()
	p.Plain = plain
	r := New(p, open, logger)
	t.Cleanup(r.Close)
	return r, logs
}

// plain_clients draft: STATUS and LIST wait for IDLE. A session that
// polls (NOOP) is written nothing of them; when it next IDLEs it gets what
// was pending, in order, and the newest STATUS only.
func TestPlainDraftWaitsForIdle(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, logs := newPlainRegistry(t, mapping.PlainDraft, st.opener())
	out := newOut()
	s := register(r, "alice", 2, out, "INBOX", false)
	waitQuiet(t, r, s)

	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 1))
	r.Publish(event.Event{Kind: event.MailboxCreate, Account: "alice", Mailbox: "New", Delimiter: ".", Origin: 1, Time: time.Now()})
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 1))
	waitQuiet(t, r, s)
	s.Flush() // NOOP
	s.Flush()
	sameLines(t, "at NOOP", out.Take(), nil)

	s.SetIdle(true)
	waitFor(t, "the lines in IDLE", func() bool { return out.Len() >= 2 })
	waitQuiet(t, r, s)
	sameLines(t, "in IDLE", out.Take(), []string{
		"* LIST () \".\" \"New\"\r\n",
		"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n",
	})
	s.EndIdle()

	// A rename while not idling: the old name's \NonExistent and the new
	// name's LIST, no OLDNAME.
	r.Publish(event.Event{Kind: event.MailboxRename, Account: "alice", Mailbox: "Newer", OldMailbox: "New", Delimiter: ".", Origin: 1, Time: time.Now()})
	s.Flush()
	sameLines(t, "rename at NOOP", out.Take(), nil)
	s.SetIdle(true)
	waitFor(t, "the rename in IDLE", func() bool { return out.Len() >= 2 })
	waitQuiet(t, r, s)
	sameLines(t, "rename in IDLE", out.Take(), []string{
		"* LIST (\\NonExistent) \".\" \"New\"\r\n",
		"* LIST () \".\" \"Newer\"\r\n",
	})
	if n := logs.Count("error"); n != 0 {
		t.Errorf("unexpected errors logged:\n%s", logs)
	}
}

// EndIdle returns only once a write that started in IDLE is done: nothing
// the session was told in IDLE can follow the IDLE command's tagged OK.
func TestEndIdleWaitsForTheWrite(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, _ := newPlainRegistry(t, mapping.PlainDraft, st.opener())
	out, release := newBlockingOut(r)
	s := register(r, "alice", 2, out, "INBOX", true)
	r.Publish(event.Event{Kind: event.MailboxCreate, Account: "alice", Mailbox: "New", Delimiter: ".", Origin: 1, Time: time.Now()})
	waitFor(t, "the writer to block", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.writing && len(s.queue) == 0
	})
	ended := make(chan struct{})
	go func() {
		s.EndIdle()
		close(ended)
	}()
	select {
	case <-ended:
		t.Fatal("EndIdle returned while the write was blocked")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("EndIdle did not return after the write")
	}
	sameLines(t, "written before EndIdle returned", out.Take(), []string{"* LIST () \".\" \"New\"\r\n"})
}

// plain_clients selected and none: no STATUS, no LIST, and no STATUS
// query of the store at all, in IDLE or not.
func TestPlainSelectedAndNoneTellNothingElse(t *testing.T) {
	for _, plain := range []mapping.PlainClients{mapping.PlainSelected, mapping.PlainNone} {
		t.Run(plain.String(), func(t *testing.T) {
			st := newTestStore(t, "alice")
			st.createMailboxes("alice", "Archive")
			r, _ := newPlainRegistry(t, plain, st.opener())
			idleOut, pollOut := newOut(), newOut()
			idle := register(r, "alice", 2, idleOut, "INBOX", true)
			poll := register(r, "alice", 3, pollOut, "INBOX", false)
			for i := 0; i < 3; i++ {
				st.appendMsg("alice", "Archive")
				r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 1))
			}
			r.Publish(event.Event{Kind: event.MailboxCreate, Account: "alice", Mailbox: "New", Delimiter: ".", Origin: 1, Time: time.Now()})
			r.Publish(event.Event{Kind: event.MailboxDelete, Account: "alice", Mailbox: "New", Delimiter: ".", Origin: 1, Time: time.Now()})
			r.Reconcile("alice")
			r.ResyncAll()
			time.Sleep(50 * time.Millisecond)
			waitQuiet(t, r, idle, poll)
			poll.Flush()
			sameLines(t, "idling session", idleOut.Take(), nil)
			sameLines(t, "polling session", pollOut.Take(), nil)
			if n := st.stats.Status("Archive"); n != 0 {
				t.Errorf("%d STATUS queries of Archive, want 0", n)
			}
		})
	}
}

// An idling client that was written nothing for the interval is written
// "* OK Still here"; one that is written something, or does not idle, is
// not.
func TestKeepalive(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, _ := newPlainRegistry(t, mapping.PlainSelected, st.opener())
	const every = 200 * time.Millisecond
	r.StartKeepalive(every)
	idleOut, pollOut, busyOut := newOut(), newOut(), newOut()
	idle := register(r, "alice", 2, idleOut, "INBOX", true)
	poll := register(r, "alice", 3, pollOut, "INBOX", false)
	busy := register(r, "alice", 4, busyOut, "Archive", true)
	start := time.Now()
	stop := time.Now().Add(5 * every)
	for time.Now().Before(stop) {
		busy.StoreUpdate("EXISTS") // the store writes to it every 20 ms
		time.Sleep(every / 10)
	}
	waitQuiet(t, r, idle, poll, busy)
	elapsed := time.Since(start)
	lines := idleOut.Take()
	// One per interval (checked every eighth of it), never more.
	if max := int(elapsed/every) + 1; len(lines) < 3 || len(lines) > max {
		t.Errorf("%d keepalives in %v, want 3..%d", len(lines), elapsed, max)
	}
	for _, l := range lines {
		if l != "* OK Still here\r\n" {
			t.Errorf("keepalive line %q", l)
		}
	}
	poll.Flush()
	sameLines(t, "session not in IDLE", pollOut.Take(), nil)
	sameLines(t, "session written by the store", busyOut.Take(), nil)
}
