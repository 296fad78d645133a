// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/backend"
	imapsql "github.com/foxcpp/go-imap-sql"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// A message event in a mailbox other than the selected one reaches every
// other session of the account as one STATUS line: idling sessions at once,
// the others at their next Flush (NOOP). The session that made the change,
// the one that has the mailbox selected and the sessions of other accounts
// get nothing.
func TestMessageEventStatusFanOut(t *testing.T) {
	st := newTestStore(t, "alice", "bob")
	st.createMailboxes("alice", "Archive")
	st.createMailboxes("bob", "Archive")
	r, logs := newRegistry(t, st.opener())

	originOut, idleOut, notIdleOut, selOut, bobOut := newOut(), newOut(), newOut(), newOut(), newOut()
	origin := register(r, "alice", 1, originOut, "INBOX", true)
	idle := register(r, "alice", 2, idleOut, "INBOX", true)
	notIdle := register(r, "alice", 3, notIdleOut, "INBOX", false)
	sel := register(r, "alice", 4, selOut, "Archive", true)
	bob := register(r, "bob", 5, bobOut, "INBOX", true)
	all := []*Session{origin, idle, notIdle, sel, bob}
	if n := r.Sessions(); n != 5 {
		t.Fatalf("Sessions() = %d, want 5", n)
	}
	waitQuiet(t, r, all...)

	st.appendMsg("alice", "Archive")
	r.Publish(event.Event{Kind: event.MessageAppend, Account: "alice", Mailbox: "Archive", Origin: origin.ID()})
	want := []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"}
	waitFor(t, "the idling session's STATUS", func() bool { return idleOut.Len() > 0 })
	waitQuiet(t, r, all...)

	sameLines(t, "idling session", idleOut.Take(), want)
	sameLines(t, "origin session", originOut.Take(), nil)
	sameLines(t, "session with Archive selected", selOut.Take(), nil)
	sameLines(t, "bob's session", bobOut.Take(), nil)
	sameLines(t, "non-idling session before Flush", notIdleOut.Take(), nil)
	notIdle.Flush()
	sameLines(t, "non-idling session at Flush", notIdleOut.Take(), want)
	notIdle.Flush()
	sameLines(t, "non-idling session at a second Flush", notIdleOut.Take(), nil)

	// A change the origin session did not make reaches it too; Flush on an
	// idling session writes nothing twice.
	st.appendMsg("alice", "Archive", `\Seen`)
	r.Publish(msgEvent(event.MessageNew, "alice", "Archive", 0))
	want = []string{"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 1)\r\n"}
	waitFor(t, "the second STATUS", func() bool { return originOut.Len() > 0 && idleOut.Len() > 0 })
	waitQuiet(t, r, all...)
	idle.Flush()
	notIdle.Flush()
	sameLines(t, "origin session, other's change", originOut.Take(), want)
	sameLines(t, "idling session, second change", idleOut.Take(), want)
	sameLines(t, "non-idling session, second change", notIdleOut.Take(), want)
	sameLines(t, "session with Archive selected, second change", selOut.Take(), nil)
	sameLines(t, "bob's session, second change", bobOut.Take(), nil)

	// bob's Archive is the same name in another account: still nothing
	// for alice.
	st.appendMsg("bob", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "bob", "Archive", 0))
	waitFor(t, "bob's STATUS", func() bool { return bobOut.Len() > 0 })
	waitQuiet(t, r, all...)
	notIdle.Flush()
	sameLines(t, "bob's session, own account", bobOut.Take(), []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"})
	for i, o := range []*fakeOut{originOut, idleOut, notIdleOut, selOut} {
		sameLines(t, fmt.Sprintf("alice's session %d, bob's change", i+1), o.Take(), nil)
	}
	if n := logs.Count("error"); n != 0 {
		t.Errorf("unexpected errors logged:\n%s", logs)
	}
}

var statusRE = regexp.MustCompile(`^\* STATUS "Archive" \(MESSAGES (\d+) UIDNEXT (\d+) UNSEEN (\d+)\)\r\n$`)

// coalesceStore is what TestCoalescedStatusMatchesStore needs of a store.
type coalesceStore struct {
	acct        string
	open        Opener
	appendMsg   func()        // adds a message to Archive, without an event
	statusLine  func() string // what STATUS Archive returns now
	statusCalls func() int    // the registry's STATUS queries of Archive so far
}

// 200 appends, each followed by its event, while the worker queries:
// STATUS is coalesced (never more store queries than events, never more
// lines than queries), values only grow, and once quiet every session's
// last line is what a STATUS command returns. go-imap-sql on SQLite makes
// the worker's reads wait for the appends (few, large passes); go-imap's
// in-memory backend answers at once (many small passes).
func TestCoalescedStatusMatchesStore(t *testing.T) {
	items := mapping.AnyTimePolicy().StatusItems
	t.Run("go-imap-sql", func(t *testing.T) {
		st := newTestStore(t, "alice")
		st.createMailboxes("alice", "Archive")
		testCoalesced(t, coalesceStore{
			acct:        "alice",
			open:        st.opener(),
			appendMsg:   func() { st.appendMsg("alice", "Archive") },
			statusLine:  func() string { return st.statusLine("alice", "Archive", items) },
			statusCalls: func() int { return st.stats.Status("Archive") },
		})
	})
	t.Run("go-imap memory", func(t *testing.T) {
		mem := newMemStore(t, "Archive")
		testCoalesced(t, coalesceStore{
			acct:        memAccount,
			open:        mem.opener(),
			appendMsg:   func() { mem.appendMsg("Archive") },
			statusLine:  func() string { return mem.statusLine("Archive", items) },
			statusCalls: func() int { return mem.stats.Status("Archive") },
		})
	})
}

func testCoalesced(t *testing.T, cs coalesceStore) {
	const n = 200
	logger, logs := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), cs.open, logger)
	defer r.Close()

	outA, outB, outC := newOut(), newOut(), newOut()
	a := register(r, cs.acct, 1, outA, "INBOX", true)
	b := register(r, cs.acct, 2, outB, "INBOX", true)
	c := register(r, cs.acct, 3, outC, "INBOX", false)
	waitQuiet(t, r, a, b, c)
	callsBefore := cs.statusCalls()
	first := cs.statusLine()

	for i := 0; i < n; i++ {
		cs.appendMsg()
		r.Publish(event.Event{Kind: event.MessageAppend, Account: cs.acct, Mailbox: "Archive"})
		runtime.Gosched() // let the worker interleave with the appends
	}
	want := cs.statusLine()
	if want == first {
		t.Fatalf("the appends did not change STATUS %q", want)
	}
	waitFor(t, "the last STATUS", func() bool {
		l := outA.Lines()
		return len(l) > 0 && l[len(l)-1] == want
	})
	waitQuiet(t, r, a, b, c)
	c.Flush()

	calls := cs.statusCalls() - callsBefore
	la, lb, lc := outA.Lines(), outB.Lines(), outC.Lines()
	t.Logf("%d events: %d STATUS queries, %d lines per session", n, calls, len(la))
	for who, lines := range map[string][]string{"idling A": la, "idling B": lb, "non-idling C": lc} {
		if len(lines) == 0 || lines[len(lines)-1] != want {
			t.Errorf("%s: last line is not the store's state %q:\n%s", who, want, quoteLines(lines))
			continue
		}
		prev := -1
		for _, l := range lines {
			m := statusRE.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("%s: unexpected line %q", who, l)
				continue
			}
			msgs, _ := strconv.Atoi(m[1])
			if msgs <= prev {
				t.Errorf("%s: MESSAGES went from %d to %d (a stale STATUS after a newer one)", who, prev, msgs)
			}
			prev = msgs
		}
	}
	// An idling session writes each batch it is woken for, keeping only the
	// newest STATUS per mailbox of the batch; a session that is not idling
	// gets the newest value once, at its Flush.
	if len(lc) != 1 {
		t.Errorf("non-idling C got %d lines at Flush, want only the newest:\n%s", len(lc), quoteLines(lc))
	}
	if len(lb) > calls {
		t.Errorf("%d lines for B from %d STATUS queries", len(lb), calls)
	}
	if calls > n {
		t.Errorf("%d STATUS queries for %d events: not coalesced", calls, n)
	}
	if len(la) > calls {
		t.Errorf("%d lines from %d STATUS queries", len(la), calls)
	}
	if n := logs.Count("error"); n != 0 {
		t.Errorf("unexpected errors logged:\n%s", logs)
	}
}

// A flag change that leaves every configured item as it was writes nothing;
// one that changes UNSEEN writes the new STATUS. Without UNSEEN among the
// items, even \Seen writes nothing.
func TestFlagChange(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	st.appendMsg("alice", "Archive")
	r, _ := newRegistry(t, st.opener())

	idleOut, notIdleOut := newOut(), newOut()
	idle := register(r, "alice", 1, idleOut, "INBOX", true)
	notIdle := register(r, "alice", 2, notIdleOut, "INBOX", false)
	waitQuiet(t, r, idle, notIdle)

	st.setFlags("alice", "Archive", `\Flagged`)
	r.Publish(event.Event{Kind: event.FlagChange, Account: "alice", Mailbox: "Archive"})
	waitQuiet(t, r, idle, notIdle)
	notIdle.Flush()
	sameLines(t, "idling session, \\Flagged", idleOut.Take(), nil)
	sameLines(t, "non-idling session, \\Flagged", notIdleOut.Take(), nil)

	st.setFlags("alice", "Archive", `\Seen`)
	r.Publish(event.Event{Kind: event.FlagChange, Account: "alice", Mailbox: "Archive"})
	want := []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 0)\r\n"}
	waitFor(t, "STATUS after \\Seen", func() bool { return idleOut.Len() > 0 })
	waitQuiet(t, r, idle, notIdle)
	notIdle.Flush()
	sameLines(t, "idling session, \\Seen", idleOut.Take(), want)
	sameLines(t, "non-idling session, \\Seen", notIdleOut.Take(), want)

	t.Run("no flag-dependent item", func(t *testing.T) {
		st := newTestStore(t, "alice")
		st.createMailboxes("alice", "Archive")
		st.appendMsg("alice", "Archive")
		p := mapping.AnyTimePolicy()
		p.StatusItems = mapping.StatusItems{mapping.StatusMessages, mapping.StatusUIDNext}
		logger, _ := testkit.NewLog()
		r := New(p, st.opener(), logger)
		defer r.Close()
		out := newOut()
		s := register(r, "alice", 1, out, "INBOX", true)
		waitQuiet(t, r, s)

		st.setFlags("alice", "Archive", `\Seen`)
		r.Publish(event.Event{Kind: event.FlagChange, Account: "alice", Mailbox: "Archive"})
		waitQuiet(t, r, s)
		s.Flush()
		sameLines(t, "session without UNSEEN", out.Take(), nil)
	})
}

// Mailbox events become LIST lines, in publishing order, for every other
// session of the account (the one with the mailbox selected included, a
// non-idling one at Flush); the origin and other accounts get nothing.
func TestMailboxEventsList(t *testing.T) {
	st := newTestStore(t, "alice", "bob")
	r, _ := newRegistry(t, st.opener())

	originOut, idleOut, notIdleOut, selOut, bobOut := newOut(), newOut(), newOut(), newOut(), newOut()
	origin := register(r, "alice", 1, originOut, "INBOX", true)
	idle := register(r, "alice", 2, idleOut, "INBOX", true)
	notIdle := register(r, "alice", 3, notIdleOut, "", false)
	sel := register(r, "alice", 4, selOut, "Work", true)
	bob := register(r, "bob", 5, bobOut, "INBOX", true)
	all := []*Session{origin, idle, notIdle, sel, bob}
	waitQuiet(t, r, all...)

	attrs := []string{`\HasNoChildren`}
	evs := []event.Event{
		{Kind: event.MailboxCreate, Mailbox: "Projects", Delimiter: "/", Attrs: attrs},
		{Kind: event.MailboxCreate, Mailbox: "Entwürfe", Delimiter: "/", Attrs: attrs},
		{Kind: event.MailboxRename, OldMailbox: "Projects", Mailbox: "Work", Delimiter: "/", Attrs: attrs},
		{Kind: event.SubscriptionChange, Mailbox: "Work", Delimiter: "/", Attrs: attrs, Subscribed: true},
		{Kind: event.SubscriptionChange, Mailbox: "Work", Delimiter: "/", Attrs: []string{`\HasNoChildren`, `\Subscribed`}, Subscribed: false},
		{Kind: event.MailboxDelete, Mailbox: "Work", Delimiter: "/"},
	}
	want := []string{
		"* LIST (\\HasNoChildren) \"/\" \"Projects\"\r\n",
		"* LIST (\\HasNoChildren) \"/\" \"Entw&APw-rfe\"\r\n",
		"* LIST (\\HasNoChildren) \"/\" \"Work\" (\"OLDNAME\" (\"Projects\"))\r\n",
		"* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Work\"\r\n",
		"* LIST (\\HasNoChildren) \"/\" \"Work\"\r\n",
		"* LIST (\\NonExistent) \"/\" \"Work\"\r\n",
	}
	// Many more creations after these, to check the order across several
	// writes of the session.
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("Box%03d", i)
		evs = append(evs, event.Event{Kind: event.MailboxCreate, Mailbox: name, Delimiter: "/", Attrs: attrs})
		want = append(want, fmt.Sprintf("* LIST (\\HasNoChildren) \"/\" %q\r\n", name))
	}
	for _, ev := range evs {
		ev.Account, ev.Origin = "alice", origin.ID()
		r.Publish(ev)
	}
	waitFor(t, "every LIST line", func() bool { return idleOut.Len() == len(want) && selOut.Len() == len(want) })
	waitQuiet(t, r, all...)
	sameLines(t, "idling session", idleOut.Take(), want)
	sameLines(t, "session with the mailbox selected", selOut.Take(), want)
	sameLines(t, "non-idling session before Flush", notIdleOut.Take(), nil)
	notIdle.Flush()
	sameLines(t, "non-idling session at Flush", notIdleOut.Take(), want)
	sameLines(t, "origin session", originOut.Take(), nil)
	sameLines(t, "bob's session", bobOut.Take(), nil)
}

// Reconcile (after an SMTP delivery, which the module cannot see) tells the
// sessions the STATUS of the mailboxes in scope whose values changed since
// the baseline taken when the account's first session registered, and
// nothing for the others.
func TestReconcile(t *testing.T) {
	line := func(mbox string, msgs int) string {
		return string(mapping.StatusLine(mbox, mapping.AnyTimePolicy().StatusItems,
			mapping.Status{Messages: uint32(msgs), UIDNext: uint32(msgs + 1), Unseen: uint32(msgs)}))
	}
	for _, tc := range []struct {
		scope mapping.MailboxScope
		// want are the lines of a session with Sent selected; INBOX is
		// then also written to the other session (INBOX selected: no).
		want []string
	}{
		{mapping.AllMailboxes, []string{line("INBOX", 1), line("Archive", 1), line("Junk", 2)}},
		{mapping.SubscribedMailboxes, []string{line("INBOX", 1), line("Archive", 1)}},
		{mapping.Inboxes, []string{line("INBOX", 1)}},
		{mapping.NoMailboxes, nil},
	} {
		t.Run(tc.scope.String(), func(t *testing.T) {
			st := newTestStore(t, "alice")
			st.createMailboxes("alice", "Archive", "Junk", "Lists", "Sent")
			st.setSubscribed("alice", false, "Junk", "Sent") // INBOX, Archive, Lists stay subscribed
			st.appendMsg("alice", "Lists")
			p := mapping.AnyTimePolicy()
			p.StatusMailboxes = tc.scope
			logger, logs := testkit.NewLog()
			r := New(p, st.opener(), logger)
			defer r.Close()

			sentOut, inboxOut := newOut(), newOut()
			sent := register(r, "alice", 1, sentOut, "Sent", true)
			inbox := register(r, "alice", 2, inboxOut, "INBOX", false)
			waitQuiet(t, r, sent, inbox)

			st.deliver("alice", "INBOX")
			st.deliver("alice", "Archive")
			st.deliver("alice", "Junk")
			st.deliver("alice", "Junk")
			r.Reconcile("alice")
			if len(tc.want) > 0 {
				waitFor(t, "reconciled STATUS", func() bool { return sentOut.Len() >= len(tc.want) })
			}
			waitQuiet(t, r, sent, inbox)
			inbox.Flush()
			sameLineSet(t, "session with Sent selected", sentOut.Take(), tc.want)
			var wantInbox []string
			for _, l := range tc.want {
				if l != line("INBOX", 1) {
					wantInbox = append(wantInbox, l)
				}
			}
			sameLineSet(t, "session with INBOX selected", inboxOut.Take(), wantInbox)

			// Nothing changed since: a second reconciliation is silent.
			r.Reconcile("alice")
			waitQuiet(t, r, sent, inbox)
			inbox.Flush()
			sameLines(t, "session with Sent selected, second Reconcile", sentOut.Take(), nil)
			sameLines(t, "session with INBOX selected, second Reconcile", inboxOut.Take(), nil)

			// Reconcile of an account without sessions does nothing.
			r.Reconcile("nobody")
			waitQuiet(t, r, sent, inbox)
			if r.HasAccount("nobody") {
				t.Error("Reconcile registered an account")
			}
			if n := logs.Count("error"); n != 0 {
				t.Errorf("unexpected errors logged:\n%s", logs)
			}
		})
	}
}

// The account's first Register learns the state of its mailboxes before
// the session exists: a change made while it learns is part of the
// session's starting state (its client has not been told anything yet),
// and the next change after it is told with exact values.
func TestBaselineAtRegister(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	opening, proceed := make(chan struct{}, 1), make(chan struct{})
	open := st.opener()
	logger, _ := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), func(acct string) (backend.User, error) {
		select {
		case opening <- struct{}{}:
			<-proceed
		default:
		}
		return open(acct)
	}, logger)
	defer r.Close()

	out := newOut()
	registered := make(chan *Session)
	go func() { registered <- register(r, "alice", 1, out, "INBOX", true) }()
	<-opening // Register is opening the account to learn it
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0)) // no session yet
	close(proceed)
	s := <-registered
	waitQuiet(t, r, s)
	if got := out.Take(); len(got) != 0 {
		t.Fatalf("told about the starting state: %q", got)
	}
	r.Reconcile("alice")
	waitQuiet(t, r, s)
	if got := out.Take(); len(got) != 0 {
		t.Fatalf("reconciliation told about the starting state: %q", got)
	}
	st.appendMsg("alice", "Archive")
	r.Reconcile("alice") // like an SMTP delivery: no event names the mailbox
	waitQuiet(t, r, s)
	sameLines(t, "session after the second delivery", out.Take(),
		[]string{"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n"})
}

// RENAME keeps the account's STATUS state under the new names (children
// included): a reconciliation afterwards tells nothing about them, and a
// later delivery into a renamed child is told under its new name.
func TestRenameKeepsState(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive", "Archive.2024") // go-imap-sql's delimiter is "."
	st.appendMsg("alice", "Archive")
	st.appendMsg("alice", "Archive.2024")
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := register(r, "alice", 1, out, "INBOX", true)
	waitQuiet(t, r, s)

	u := st.user("alice")
	if err := u.RenameMailbox("Archive", "Old"); err != nil {
		t.Fatal(err)
	}
	u.Logout()
	r.Publish(event.Event{Kind: event.MailboxRename, Account: "alice", OldMailbox: "Archive", Mailbox: "Old",
		Delimiter: imapsql.MailboxPathSep, Attrs: []string{`\HasChildren`}, Origin: 7})
	r.Reconcile("alice")
	waitQuiet(t, r, s)
	sameLines(t, "after RENAME", out.Take(), []string{"* LIST (\\HasChildren) \".\" \"Old\" (\"OLDNAME\" (\"Archive\"))\r\n"})

	st.deliver("alice", "Old.2024")
	r.Reconcile("alice")
	waitFor(t, "STATUS of the renamed child", func() bool { return out.Len() > 0 })
	waitQuiet(t, r, s)
	sameLines(t, "after delivery into the renamed child", out.Take(),
		[]string{"* STATUS \"Old.2024\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n"})
}

// EXPUNGE (or CLOSE, which expunges) that removes nothing leaves STATUS as
// it was: no line. One that removes messages writes the new STATUS.
func TestExpungeOfNothing(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	st.appendMsg("alice", "Archive")
	r, _ := newRegistry(t, st.opener())
	idleOut, pollOut := newOut(), newOut()
	idle := register(r, "alice", 1, idleOut, "INBOX", true)
	poll := register(r, "alice", 2, pollOut, "INBOX", false)
	waitQuiet(t, r, idle, poll)

	// Another session CLOSEs Archive with nothing marked \Deleted.
	r.Publish(msgEvent(event.MessageExpunge, "alice", "Archive", 9))
	waitQuiet(t, r, idle, poll)
	poll.Flush()
	sameLines(t, "idling session, nothing expunged", idleOut.Take(), nil)
	sameLines(t, "polling session, nothing expunged", pollOut.Take(), nil)

	st.setFlags("alice", "Archive", `\Deleted`)
	u := st.user("alice")
	_, m, err := u.GetMailbox("Archive", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Expunge(); err != nil {
		t.Fatal(err)
	}
	m.Close()
	u.Logout()
	r.Publish(msgEvent(event.MessageExpunge, "alice", "Archive", 9))
	want := []string{"* STATUS \"Archive\" (MESSAGES 0 UIDNEXT 2 UNSEEN 0)\r\n"}
	waitFor(t, "STATUS after the expunge", func() bool { return idleOut.Len() > 0 })
	waitQuiet(t, r, idle, poll)
	poll.Flush()
	sameLines(t, "idling session, one expunged", idleOut.Take(), want)
	sameLines(t, "polling session, one expunged", pollOut.Take(), want)
}

// ResyncAll (after a broker reconnect) tells the sessions, from the store's
// state, the mailboxes created and deleted meanwhile (LIST, before any
// STATUS) and the STATUS values that changed.
func TestResyncAll(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive", "Sent")
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := register(r, "alice", 1, out, "Sent", true)
	waitQuiet(t, r, s)

	st.createMailboxes("alice", "Projects")
	u := st.user("alice")
	if err := u.DeleteMailbox("Archive"); err != nil {
		t.Fatal(err)
	}
	u.Logout()
	st.deliver("alice", "INBOX")
	r.ResyncAll()
	waitFor(t, "the resynchronisation", func() bool { return out.Len() >= 3 })
	waitQuiet(t, r, s)
	got := out.Take()
	// The new, empty Projects gets its LIST but no STATUS: nothing happened
	// in it to tell.
	if len(got) == 3 {
		sameLineSet(t, "LIST lines first", got[:2], []string{
			"* LIST (\\HasNoChildren) \".\" \"Projects\"\r\n",
			"* LIST (\\NonExistent) \".\" \"Archive\"\r\n",
		})
		sameLines(t, "then STATUS", got[2:], []string{
			"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n",
		})
	} else {
		t.Errorf("got %d lines, want 3:\n%s", len(got), quoteLines(got))
	}
}

// A change that the account's last STATUS query of its mailbox already saw
// (it was committed before that query started, and published after) is not
// queried again: the query could only repeat the value every session was
// handed. It is queried when that is not certain: the event's time is from
// another clock (another instance), the change came after the query
// started, a session registered since, or the last value went to a session
// as its own change and this one was someone else's. A change that may
// have left STATUS as it was (a flag change) is compared with that value
// and so is not queried either.
func TestStatusNotRepeatedForSeenChange(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, logs := newRegistry(t, st.opener())
	aOut, bOut, cOut := newOut(), newOut(), newOut()
	a := register(r, "alice", 1, aOut, "INBOX", true)
	b := register(r, "alice", 2, bOut, "INBOX", true)
	c := register(r, "alice", 3, cOut, "INBOX", false)
	all := []*Session{a, b, c}
	waitQuiet(t, r, all...)

	line := func() string { return st.statusLine("alice", "Archive", mapping.AnyTimePolicy().StatusItems) }
	queries := func() int { return st.stats.Status("Archive") }
	publish := func(kind event.Kind, origin uint64, at time.Time) {
		r.Publish(event.Event{Kind: kind, Account: "alice", Mailbox: "Archive", Origin: origin, Time: at})
		waitQuiet(t, r, all...)
	}
	// step publishes and checks how many queries it caused and what the
	// idling sessions got.
	step := func(what string, kind event.Kind, origin uint64, at time.Time, wantQueries int, wantA, wantB []string) {
		t.Helper()
		n := queries()
		publish(kind, origin, at)
		if got := queries() - n; got != wantQueries {
			t.Errorf("%s: %d STATUS queries, want %d", what, got, wantQueries)
		}
		sameLines(t, what+": session 1", aOut.Take(), wantA)
		sameLines(t, what+": session 2", bOut.Take(), wantB)
	}

	st.appendMsg("alice", "Archive")
	one := line()
	step("first change", event.MessageAppend, 0, time.Now(), 1, []string{one}, []string{one})

	// The second APPEND commits; the event of a third change starts a
	// query, which sees it; then the second APPEND's event comes.
	st.appendMsg("alice", "Archive")
	committed := time.Now() // as the hooks stamp it: after the store call returned
	two := line()
	step("a change after the commit", event.MessageAppend, 0, time.Now(), 1, []string{two}, []string{two})
	step("the change the query saw", event.MessageAppend, 0, committed, 0, nil, nil)
	step("a flag change the query saw", event.FlagChange, 0, committed, 0, nil, nil)
	step("a change without a time", event.MessageAppend, 0, time.Time{}, 1, nil, nil)
	step("another instance's change (wall clock only)", event.MessageAppend, 0, committed.Round(0), 1, nil, nil)
	step("a change after the query started", event.MessageAppend, 0, time.Now(), 1, nil, nil)

	// A session registered since the last query was not handed its value.
	dOut := newOut()
	d := register(r, "alice", 4, dOut, "INBOX", true)
	all = append(all, d)
	waitQuiet(t, r, all...)
	step("a change the query saw, a session registered since", event.MessageAppend, 0, committed, 1, nil, nil)
	sameLines(t, "the session registered since", dOut.Take(), []string{two})

	// The last value went to session 1 as its own change (it was not
	// told); a change by someone else is queried, so that it is told.
	st.appendMsg("alice", "Archive")
	committed = time.Now()
	three := line()
	step("session 1's change", event.MessageAppend, a.ID(), time.Now(), 1, nil, []string{three})
	step("someone else's change the query of session 1's saw", event.MessageAppend, 0, committed, 1, []string{three}, nil)
	step("then session 1's change that query saw", event.MessageAppend, a.ID(), committed, 0, nil, nil)

	c.Flush()
	sameLines(t, "the polling session", cOut.Take(), []string{three})
	if n := logs.Count("error"); n != 0 {
		t.Errorf("unexpected errors logged:\n%s", logs)
	}
}

// The next STATUS query of a mailbox waits until the sessions whose writer
// was about to take the last value of it have read it: otherwise, when the
// writers lag behind the worker, the next value replaces the last one in
// the account's state before they read it, and they are told only every
// other value. There is no timer in the wait. It does not wait
// for a session that does not idle (nothing takes a value before the
// client's NOOP) or whose writer is in the middle of a write (its client
// may have stopped reading).
func TestStatusQueryWaitsForTheLastValue(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	logger, _ := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), st.opener(), logger)
	defer r.Close()
	out := newOut()
	s := register(r, "alice", 1, out, "INBOX", true)
	waitQuiet(t, r, s)
	line := func() string { return st.statusLine("alice", "Archive", mapping.AnyTimePolicy().StatusItems) }

	// The session's writer is held up before it takes its queue.
	s.flushMu.Lock()
	queries := st.stats.Status("Archive")
	st.appendMsg("alice", "Archive")
	one := line()
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	waitFor(t, "the first query", func() bool { return st.stats.Status("Archive") == queries+1 })
	st.appendMsg("alice", "Archive")
	two := line()
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	time.Sleep(20 * time.Millisecond) // the worker would query now if it did not wait
	if n := st.stats.Status("Archive") - queries; n != 1 {
		t.Errorf("%d queries before the session took the first value, want 1", n)
	}
	s.flushMu.Unlock()
	waitFor(t, "both values", func() bool { return out.Len() == 2 })
	waitQuiet(t, r, s)
	sameLines(t, "the session", out.Take(), []string{one, two})

	// A session whose writer is stuck in a write and one that does not
	// idle: no waiting.
	r2 := New(mapping.AnyTimePolicy(), st.opener(), logger)
	defer r2.Close()
	stuckOut, release := newBlockingOut(r2)
	defer release()
	stuck := register(r2, "alice", 2, stuckOut, "INBOX", true)
	pollOut := newOut()
	poll := register(r2, "alice", 3, pollOut, "INBOX", false)
	waitQuiet(t, r2, stuck, poll)
	flood(r2, "alice", 0, 1)
	<-stuckOut.entered
	start := time.Now()
	for i := 0; i < 3; i++ {
		st.appendMsg("alice", "Archive")
		r2.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
		waitQuiet(t, r2, poll)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("three queries took %v: the worker waited", d)
	}
	poll.Flush()
	sameLines(t, "the polling session", pollOut.Take(), []string{"* LIST (\\HasNoChildren) \".\" \"Box000\"\r\n", line()})
}

// A change published while the last query of its mailbox ran may or may
// not have been seen by it: it is queried again, at once (no timer holds
// it back), and a value that repeats the last one is a new version for no
// one, so no session is told it twice. A later change is queried as usual.
func TestStatusChangeDuringQuery(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := register(r, "alice", 1, out, "INBOX", true)
	waitQuiet(t, r, s)
	line := func() string { return st.statusLine("alice", "Archive", mapping.AnyTimePolicy().StatusItems) }

	// While the first query runs (after it started, before the store
	// reads), a second APPEND commits and is published.
	var armed atomic.Bool
	armed.Store(true)
	st.stats.setStatusHook(func(_, mbox string) {
		if mbox == "Archive" && armed.CompareAndSwap(true, false) {
			st.appendMsg("alice", "Archive")
			r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
		}
	})
	queries := st.stats.Status("Archive")
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	waitFor(t, "the first STATUS", func() bool { return out.Len() == 1 })
	waitQuiet(t, r, s)
	two := line()
	sameLines(t, "the first query's value", out.Take(), []string{two})
	if n := st.stats.Status("Archive") - queries; n != 2 {
		t.Errorf("%d queries, want 2 (the change published during the first is queried again)", n)
	}
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	waitQuiet(t, r, s)
	if n := st.stats.Status("Archive") - queries; n != 3 {
		t.Errorf("%d queries for three changes, want 3", n)
	}
	sameLines(t, "the next change", out.Take(), []string{line()})
}

// TestStatusNotQueriedWhenSelectedByAll: while every session of an account
// has the changed mailbox selected, nobody is told its STATUS, so the
// store is not asked; once a session has another mailbox selected, the
// next change is queried and that session gets the exact value.
func TestStatusNotQueriedWhenSelectedByAll(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive")
	r, _ := newRegistry(t, st.opener())

	aOut, bOut := newOut(), newOut()
	a := register(r, "alice", 1, aOut, "INBOX", true)
	b := register(r, "alice", 2, bOut, "INBOX", true)
	waitQuiet(t, r, a, b)
	before := st.stats.Status("INBOX")
	for i := 0; i < 3; i++ {
		st.appendMsg("alice", "INBOX")
		r.Publish(msgEvent(event.MessageAppend, "alice", "INBOX", 0))
	}
	waitQuiet(t, r, a, b)
	if n := st.stats.Status("INBOX") - before; n != 0 {
		t.Errorf("%d STATUS queries of INBOX while every session has it selected, want 0", n)
	}
	sameLines(t, "session a", aOut.Take(), nil)
	sameLines(t, "session b", bOut.Take(), nil)

	b.Select("Archive", nil)
	st.appendMsg("alice", "INBOX")
	r.Publish(msgEvent(event.MessageAppend, "alice", "INBOX", 0))
	waitFor(t, "b's STATUS of INBOX", func() bool { return bOut.Len() > 0 })
	waitQuiet(t, r, a, b)
	if n := st.stats.Status("INBOX") - before; n != 1 {
		t.Errorf("%d STATUS queries of INBOX after b selected Archive, want 1", n)
	}
	sameLines(t, "session b", bOut.Take(), []string{st.statusLine("alice", "INBOX", mapping.AnyTimePolicy().StatusItems)})
	sameLines(t, "session a", aOut.Take(), nil)
}

// A change under way (BeginChange) in a mailbox whose STATUS the account's
// worker is about to query holds the query until it ended: the one query
// then reads both changes, and the sessions get one line with both. A
// change under way in a mailbox with no pending change holds nothing.
func TestStatusWaitsForChangeUnderWay(t *testing.T) {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive", "Sent")
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := register(r, "alice", 1, out, "Sent", true)
	waitQuiet(t, r, s)
	line := func(mbox string) string { return st.statusLine("alice", mbox, mapping.AnyTimePolicy().StatusItems) }
	queries := st.stats.Status("Archive")

	end := r.BeginChange("alice", "Archive")
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	time.Sleep(20 * time.Millisecond) // the worker would query now if it did not wait
	if n := st.stats.Status("Archive") - queries; n != 0 {
		t.Errorf("%d queries while a change of Archive was under way, want 0", n)
	}
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	end()
	waitQuiet(t, r, s)
	if n := st.stats.Status("Archive") - queries; n != 1 {
		t.Errorf("%d queries of Archive for two changes, want 1", n)
	}
	sameLines(t, "the session", out.Take(), []string{line("Archive")})
	end() // more than once is harmless

	// A change under way in Sent, where nothing is pending, does not hold
	// the query of INBOX.
	other := r.BeginChange("alice", "Sent")
	defer other()
	st.appendMsg("alice", "INBOX")
	r.Publish(msgEvent(event.MessageAppend, "alice", "INBOX", 0))
	waitFor(t, "INBOX's STATUS while Sent's change is under way", func() bool { return out.Len() == 1 })
	sameLines(t, "the session", out.Take(), []string{line("INBOX")})
}
