// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// flood publishes n MailboxCreate events of acct (LIST lines, queued for
// every session as they are) and returns the lines they make.
func flood(r *Registry, acct string, from, n int) []string {
	var want []string
	for i := from; i < from+n; i++ {
		name := fmt.Sprintf("Box%03d", i)
		r.Publish(event.Event{Kind: event.MailboxCreate, Account: acct, Mailbox: name, Delimiter: ".", Attrs: []string{`\HasNoChildren`}})
		want = append(want, fmt.Sprintf("* LIST (\\HasNoChildren) \".\" %q\r\n", name))
	}
	return want
}

// floodPaced is flood in chunks of 64 events, waiting after each chunk
// until caughtUp(lines so far) holds: a burst paced for a client that reads,
// so that only a session that does not read can overflow.
func floodPaced(t *testing.T, r *Registry, acct string, n int, caughtUp func(int) bool) []string {
	t.Helper()
	var want []string
	for len(want) < n {
		k := min(64, n-len(want))
		want = append(want, flood(r, acct, len(want), k)...)
		sofar := len(want)
		waitFor(t, "the reading session to catch up", func() bool { return caughtUp(sofar) })
	}
	return want
}

// overflowStore has INBOX (empty), Archive (2 unseen) and Junk (empty); a
// resynchronised session with INBOX selected gets resyncLines.
func overflowStore(t *testing.T) *testStore {
	st := newTestStore(t, "alice")
	st.createMailboxes("alice", "Archive", "Junk")
	st.appendMsg("alice", "Archive")
	st.appendMsg("alice", "Archive")
	return st
}

var resyncLines = []string{
	"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n",
	"* STATUS \"Junk\" (MESSAGES 0 UIDNEXT 1 UNSEEN 0)\r\n",
}

const overflowEvents = QueueLimit + 100

// A session that never idles overflows its queue: the queue is dropped and
// the session is resynchronised by state (a STATUS per mailbox in scope and
// a LIST line per mailbox created since it was last told), while an idling
// session of the account gets every line promptly and nothing else.
func TestOverflowNeverIdling(t *testing.T) {
	st := overflowStore(t)
	r, logs := newRegistry(t, st.opener())
	slowOut, fastOut := newOut(), newOut()
	slow := register(r, "alice", 1, slowOut, "INBOX", false)
	fast := register(r, "alice", 2, fastOut, "INBOX", true)
	waitQuiet(t, r, slow, fast)

	want := floodPaced(t, r, "alice", overflowEvents, func(n int) bool { return fastOut.Len() == n })
	if n := logs.Count("session queue overflow"); n != 1 {
		t.Errorf("overflow logged %d times, want once:\n%s", n, logs)
	}
	// The resynchronisation is asynchronous: Flush (NOOP) until it lands.
	waitFor(t, "the resynchronised STATUS", func() bool {
		slow.Flush()
		return slowOut.Len() >= len(want)+len(resyncLines)
	})
	waitQuiet(t, r, slow, fast)
	slow.Flush()
	sameLineSet(t, "overflowed session", slowOut.Take(), append(slices.Clone(want), resyncLines...))
	sameLines(t, "idling session", fastOut.Take(), want)

	// Back to normal afterwards.
	more := flood(r, "alice", overflowEvents, 3)
	waitQuiet(t, r, slow, fast)
	slow.Flush()
	sameLines(t, "overflowed session, later", slowOut.Take(), more)
	sameLines(t, "idling session, later", fastOut.Take(), more)
}

// The first Flush (NOOP) after an overflow already carries the state: the
// client that polls gets it at its next poll, not one poll later.
func TestOverflowFirstFlushResyncs(t *testing.T) {
	st := overflowStore(t)
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := register(r, "alice", 1, out, "INBOX", false)
	waitQuiet(t, r, s)

	created := flood(r, "alice", 0, overflowEvents)
	s.Flush()
	sameLineSet(t, "first Flush after the overflow", out.Take(), append(created, resyncLines...))
}

// fakeFetcher hands out FETCH lines for "announced" messages.
type fakeFetcher struct {
	mu      sync.Mutex
	pending [][]byte
	calls   int
}

func (f *fakeFetcher) announce(line string) {
	f.mu.Lock()
	f.pending = append(f.pending, []byte(line))
	f.mu.Unlock()
}

func (f *fakeFetcher) FetchNew(_ mapping.FetchItems, write func([][]byte) error, _ bool) (bool, error) {
	f.mu.Lock()
	lines := f.pending
	f.pending = nil
	f.calls++
	f.mu.Unlock()
	if len(lines) == 0 {
		return true, nil
	}
	return true, write(lines)
}

func (f *fakeFetcher) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// New messages announced in the selected mailbox before an overflow still
// get their FETCH: the resynchronisation covers the selected mailbox too.
func TestOverflowKeepsNewMessageFetch(t *testing.T) {
	st := overflowStore(t)
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := r.Register("alice", 1, out)
	f := &fakeFetcher{}
	s.Select("INBOX", f)
	waitQuiet(t, r, s)

	const fetch = "* 1 FETCH (UID 1 FLAGS ())\r\n"
	f.announce(fetch)
	s.NewMessages()
	flood(r, "alice", 0, overflowEvents)
	waitFor(t, "the resynchronised STATUS", func() bool {
		s.Flush()
		return out.Len() >= len(resyncLines)
	})
	waitQuiet(t, r, s)
	s.Flush()
	got := out.Take()
	n := 0
	for _, l := range got {
		if l == fetch {
			n++
		}
	}
	if n != 1 || f.Calls() == 0 {
		t.Errorf("after the overflow: FetchNew called %d times, FETCH line written %d times (want once); lines:\n%s",
			f.Calls(), n, quoteLines(got))
	}
}

// An idling session whose client does not read (Write blocks) overflows
// while another idling session gets every line as it comes and Publish
// never waits; once the client reads again it is resynchronised by state.
func TestOverflowBlockedWriter(t *testing.T) {
	st := overflowStore(t)
	r, logs := newRegistry(t, st.opener())
	stuckOut, release := newBlockingOut(r)
	defer release()
	fastOut := newOut()
	stuck := register(r, "alice", 1, stuckOut, "INBOX", true)
	fast := register(r, "alice", 2, fastOut, "INBOX", true)
	waitQuiet(t, r, stuck, fast)

	start := time.Now()
	want := floodPaced(t, r, "alice", overflowEvents, func(n int) bool { return fastOut.Len() == n })
	t.Logf("%d events delivered to the reading session in %v while the other one was stuck", overflowEvents, time.Since(start))
	select {
	case <-stuckOut.entered: // the stuck session's writer is inside Write
	default:
		t.Fatal("the stuck session was never written to")
	}
	if n := stuckOut.Len(); n == 0 || n > 64 {
		t.Fatalf("the stuck session was written %d lines, want its first batch (its Write still blocks)", n)
	}
	if n := logs.Count("session queue overflow"); n != 1 {
		t.Errorf("overflow logged %d times, want once:\n%s", n, logs)
	}

	first := stuckOut.Len()
	release()
	waitFor(t, "the stuck session's resynchronisation", func() bool { return stuckOut.Len() >= len(want)+len(resyncLines) })
	waitQuiet(t, r, stuck, fast)
	got := stuckOut.Take()
	sameLines(t, "stuck session, before the overflow", got[:first], want[:first])
	// The mailboxes it was not told of come as LIST lines with the state.
	sameLineSet(t, "stuck session, after the overflow", got[first:], append(slices.Clone(want[first:]), resyncLines...))
	sameLines(t, "reading session", fastOut.Take(), want)
}

// Unregister (what the hooks call at Logout, which go-imap calls when a
// connection closes) is idempotent. A session whose connection is gone
// leaves the registry without it too: when a write fails (also one that
// was blocked), and when its Out reports LoggedOut as it is next handed
// something. The account's store handle is closed with its last session,
// and no goroutine of the registry is left behind.
func TestUnregisterAndLoggedOut(t *testing.T) {
	st := newTestStore(t, "alice", "bob", "carol")
	r, _ := newRegistry(t, st.opener())

	aOut, bOut, dOut := newOut(), newOut(), newOut()
	cOut, release := newBlockingOut(r)
	defer release()
	dOut.err = ErrClosed // the connection is gone: every write fails
	a := register(r, "alice", 1, aOut, "INBOX", true)
	b := register(r, "alice", 2, bOut, "INBOX", false)
	c := register(r, "bob", 3, cOut, "INBOX", true)
	d := register(r, "carol", 4, dOut, "INBOX", true)
	waitQuiet(t, r, a, b, c, d)
	if n := r.Sessions(); n != 4 {
		t.Fatalf("Sessions() = %d, want 4", n)
	}

	noPanic(t, "Unregister", func() { r.Unregister(a) })
	noPanic(t, "second Unregister", func() { r.Unregister(a) })
	if n := r.Sessions(); n != 3 {
		t.Errorf("Sessions() after Unregister = %d, want 3", n)
	}

	// A failed write.
	flood(r, "carol", 0, 1)
	waitFor(t, "the session whose write failed to be removed", func() bool { return !r.HasAccount("carol") })

	// Logged out without Unregister (a non-idling session: nothing is
	// written to it), then handed a LIST line.
	bOut.logout()
	flood(r, "alice", 0, 1)
	waitFor(t, "the logged-out session to be removed", func() bool { return !r.HasAccount("alice") })
	noPanic(t, "Unregister after logout", func() { r.Unregister(b) })

	// Logged out while its write blocks: the write returns ErrClosed.
	flood(r, "bob", 0, 1)
	<-cOut.entered
	cOut.logout()
	waitFor(t, "the blocked session to be removed", func() bool { return r.Sessions() == 0 })
	waitFor(t, "bob's account to be dropped", func() bool { return !r.HasAccount("bob") })
	waitFor(t, "every store handle to be closed", func() bool { return st.stats.logouts.Load() == st.stats.opens.Load() })
	waitFor(t, "the registry's goroutines to end", func() bool { return registryGoroutines() == 0 })

	flood(r, "alice", 0, 1)
	r.Publish(msgEvent(event.MessageNew, "alice", "INBOX", 0))
	a.Flush()
	b.Flush()
	for i, o := range []*fakeOut{aOut, bOut} {
		sameLines(t, fmt.Sprintf("removed session %d", i+1), o.Take(), nil)
	}
	if n := dOut.Len(); n != 1 {
		t.Errorf("the session whose write failed was written %d times, want once", n)
	}
}

// Sessions with nothing to write have no goroutine: a goroutine writes
// for an idling session while something is queued and ends afterwards.
func TestNoGoroutineWhileNothingToWrite(t *testing.T) {
	st := newTestStore(t, "alice")
	r, _ := newRegistry(t, st.opener())
	const n = 50
	var sessions []*Session
	var outs []*fakeOut
	for i := 0; i < n; i++ {
		out := newOut()
		outs = append(outs, out)
		sessions = append(sessions, register(r, "alice", uint64(i+1), out, "INBOX", i%2 == 0))
	}
	waitQuiet(t, r, sessions...)
	waitFor(t, "no registry goroutine", func() bool { return registryGoroutines() == 0 })

	want := flood(r, "alice", 0, 3)
	waitFor(t, "the idling sessions' lines", func() bool {
		for i, o := range outs {
			if i%2 == 0 && o.Len() != len(want) {
				return false
			}
		}
		return true
	})
	waitQuiet(t, r, sessions...)
	waitFor(t, "the writers to end", func() bool { return registryGoroutines() == 0 })
	for i, o := range outs {
		if i%2 == 1 {
			sessions[i].Flush()
		}
		sameLines(t, fmt.Sprintf("session %d", i+1), o.Take(), want)
	}
	if registryGoroutines() != 0 {
		t.Error("Flush from the caller's goroutine left a registry goroutine")
	}
}

// Close ends every goroutine the registry started (also a writer blocked in
// Write) and closes the store handles; afterwards Register, Publish and
// Reconcile do nothing and start nothing.
func TestClose(t *testing.T) {
	st := newTestStore(t, "alice", "bob")
	st.createMailboxes("alice", "Archive")
	st.user("alice").Logout() // warm the store up: its own goroutines run from here on
	before := runtime.NumGoroutine()
	if n := registryGoroutines(); n != 0 {
		t.Fatalf("%d registry goroutines before the test", n)
	}

	logger, _ := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), st.opener(), logger)
	idleOut, pollOut, bobOut := newOut(), newOut(), newOut()
	stuckOut, release := newBlockingOut(r)
	defer release()
	idle := register(r, "alice", 1, idleOut, "INBOX", true)
	poll := register(r, "alice", 2, pollOut, "INBOX", false)
	register(r, "alice", 3, stuckOut, "INBOX", true) // its Write will block
	bob := register(r, "bob", 4, bobOut, "INBOX", true)
	waitQuiet(t, r, idle, poll, bob)
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	<-stuckOut.entered
	waitFor(t, "the idling session's STATUS", func() bool { return idleOut.Len() == 1 })
	flood(r, "alice", 0, 1) // queued behind the blocked write; the polling session's too
	if n := registryGoroutines(); n < 1 {
		t.Fatalf("%d registry goroutines while a write blocks", n)
	}

	r.Close()
	// A goroutine that called wg.Done is still on its way out: poll briefly.
	waitFor(t, "the registry's goroutines to end", func() bool { return registryGoroutines() == 0 })
	waitFor(t, "the goroutine count to drop back", func() bool { return runtime.NumGoroutine() <= before })
	if n := r.Sessions(); n != 0 {
		t.Errorf("Sessions() after Close = %d", n)
	}
	if opens, logouts := st.stats.opens.Load(), st.stats.logouts.Load(); opens != logouts {
		t.Errorf("%d store handles opened, %d closed", opens, logouts)
	}
	idleOut.Take() // the STATUS from before Close
	idle.Flush()
	poll.Flush()
	if registryGoroutines() != 0 {
		t.Error("Flush after Close started a goroutine")
	}

	st.appendMsg("alice", "Archive") // a change in the store after Close
	opens := st.stats.opens.Load()
	lateOut := newOut()
	late := register(r, "alice", 5, lateOut, "INBOX", true)
	if r.Sessions() != 0 || r.HasAccount("alice") {
		t.Error("Register after Close registered a session")
	}
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	flood(r, "alice", 0, 2)
	r.Reconcile("alice")
	r.ResyncAll()
	late.Flush()
	idle.SetIdle(true)
	if n := registryGoroutines(); n != 0 {
		t.Errorf("Register/Publish/Reconcile after Close started %d goroutines", n)
	}
	if n := st.stats.opens.Load(); n != opens {
		t.Errorf("the store was opened %d times after Close", n-opens)
	}
	for i, o := range []*fakeOut{idleOut, pollOut, bobOut, lateOut} {
		sameLines(t, fmt.Sprintf("session %d after Close", i+1), o.Take(), nil)
	}
	noPanic(t, "second Close", r.Close)
}

// Close: "Sessions get nothing more" — also not what was queued for a
// session that does not idle, when its client sends NOOP afterwards.
func TestNothingWrittenAfterClose(t *testing.T) {
	st := newTestStore(t, "alice")
	logger, _ := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), st.opener(), logger)
	out := newOut()
	s := register(r, "alice", 1, out, "INBOX", false)
	waitQuiet(t, r, s)
	flood(r, "alice", 0, 1)
	r.Close()
	s.Flush()
	sameLines(t, "Flush after Close", out.Take(), nil)
}

// A session registered after Close (a SELECT racing shutdown) can be
// unregistered, and flushed after its connection failed, without a panic.
func TestRegisterAfterClose(t *testing.T) {
	st := newTestStore(t, "alice")
	logger, _ := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), st.opener(), logger)
	r.Close()

	s := r.Register("alice", 1, newOut())
	noPanic(t, "Unregister of a session registered after Close", func() { r.Unregister(s) })

	out := newOut()
	out.err = ErrClosed
	s2 := r.Register("alice", 2, out)
	f := &fakeFetcher{}
	f.announce("* 1 FETCH (UID 1 FLAGS ())\r\n")
	s2.Select("INBOX", f)
	s2.NewMessages()
	noPanic(t, "Flush of a session registered after Close whose connection is gone", s2.Flush)
}

// Register, IDLE and an event racing Close: when Close returns, no
// goroutine of the registry may still start or run (Close's WaitGroup must
// know of every goroutine before it waits; under -race a late Add is
// reported as a race with Wait). A session's writer asks its Out for
// LoggedOut at every turn.
func TestRegisterRacingClose(t *testing.T) {
	st := newTestStore(t, "alice")
	logger, _ := testkit.NewLog()
	var late atomic.Int64
	for i := 0; i < 10000 && late.Load() == 0; i++ {
		r := New(mapping.AnyTimePolicy(), st.opener(), logger)
		var closed atomic.Bool
		out := newOut()
		out.loggedOutHook = func() {
			if closed.Load() {
				late.Add(1) // session work runs after Close returned
			}
		}
		started := make(chan struct{})
		done := make(chan struct{})
		go func() {
			close(started)
			s := r.Register("alice", 1, out)
			s.SetIdle(true)
			r.Publish(event.Event{Kind: event.MailboxCreate, Account: "alice", Mailbox: "New", Delimiter: "."})
			close(done)
		}()
		<-started
		r.Close()
		closed.Store(true)
		<-done
		// Let a late goroutine (if any) run its first turn.
		for j := 0; j < 10; j++ {
			runtime.Gosched()
		}
	}
	if n := late.Load(); n != 0 {
		t.Errorf("a goroutine of the registry ran after Close returned (%d times)", n)
	}
}

// A panic in the Opener is recovered and logged with its stack; the
// registry keeps working for other accounts, and for the account once the
// store answers again.
func TestPanicInOpener(t *testing.T) {
	st := newTestStore(t, "alice", "mallory")
	st.createMailboxes("alice", "Archive")
	st.createMailboxes("mallory", "Archive")
	st.stats.setOpenPanic("mallory", true)
	r, logs := newRegistry(t, st.opener())

	mOut, aOut := newOut(), newOut()
	m := register(r, "mallory", 1, mOut, "INBOX", true)
	a := register(r, "alice", 2, aOut, "INBOX", true)
	waitFor(t, "the panic to be logged", func() bool { return logs.Count("panic in account mallory") == 1 })
	waitQuiet(t, r, m, a)
	if logs.Count("ensureUser") == 0 {
		t.Errorf("the panic was logged without its stack:\n%s", logs)
	}

	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	st.appendMsg("mallory", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "mallory", "Archive", 0))
	waitFor(t, "alice's STATUS", func() bool { return aOut.Len() == 1 })
	waitFor(t, "the second panic to be logged", func() bool { return logs.Count("panic in account mallory") == 2 })
	waitQuiet(t, r, m, a)
	sameLines(t, "alice", aOut.Take(), []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"})
	sameLines(t, "mallory while the store panics", mOut.Take(), nil)

	st.stats.setOpenPanic("mallory", false)
	st.appendMsg("mallory", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "mallory", "Archive", 0))
	waitFor(t, "mallory's STATUS", func() bool { return mOut.Len() == 1 })
	waitQuiet(t, r, m, a)
	sameLines(t, "mallory once the store answers", mOut.Take(), []string{"* STATUS \"Archive\" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)\r\n"})
}

// A panic in the store's Status is recovered and logged; other mailboxes,
// other accounts and later queries of the same mailbox keep working.
func TestPanicInStatus(t *testing.T) {
	st := newTestStore(t, "alice", "bob")
	st.createMailboxes("alice", "Archive", "Junk")
	st.createMailboxes("bob", "Archive")
	r, logs := newRegistry(t, st.opener())
	aOut, bOut := newOut(), newOut()
	a := register(r, "alice", 1, aOut, "INBOX", true)
	b := register(r, "bob", 2, bOut, "INBOX", true)
	waitQuiet(t, r, a, b)

	st.stats.setStatusPanic("Archive", true)
	st.appendMsg("alice", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Archive", 0))
	waitFor(t, "the panic to be logged", func() bool { return logs.Count("panic in account alice") == 1 })
	waitQuiet(t, r, a, b)
	st.stats.setStatusPanic("Archive", false)

	st.appendMsg("alice", "Junk")
	r.Publish(msgEvent(event.MessageAppend, "alice", "Junk", 0))
	st.appendMsg("bob", "Archive")
	r.Publish(msgEvent(event.MessageAppend, "bob", "Archive", 0))
	waitFor(t, "the STATUS lines", func() bool { return aOut.Len() == 1 && bOut.Len() == 1 })
	waitQuiet(t, r, a, b)
	sameLines(t, "alice, other mailbox", aOut.Take(), []string{"* STATUS \"Junk\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"})
	sameLines(t, "bob", bOut.Take(), []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"})

	r.Publish(msgEvent(event.FlagChange, "alice", "Archive", 0))
	waitFor(t, "alice's Archive STATUS", func() bool { return aOut.Len() == 1 })
	waitQuiet(t, r, a, b)
	sameLines(t, "alice, the mailbox that panicked", aOut.Take(), []string{"* STATUS \"Archive\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)\r\n"})
}

// At most one worker per account: a worker must never run while the
// account says none does (else a second one starts, both query, and a
// session can end up with an older STATUS after a newer one). Many
// accounts publish at once; every Status call checks the invariant.
func TestOneWorkerPerAccount(t *testing.T) {
	const accounts = 16
	var names []string
	for i := 0; i < accounts; i++ {
		names = append(names, fmt.Sprintf("user%02d", i))
	}
	st := newTestStore(t, names...)
	r, _ := newRegistry(t, st.opener())
	var sessions []*Session
	for i, acct := range names {
		sessions = append(sessions, register(r, acct, uint64(i+1), newOut(), "", true))
	}
	waitQuiet(t, r, sessions...)

	var violations atomic.Int64
	st.stats.setStatusHook(func(acct, _ string) {
		r.mu.Lock()
		if a := r.accounts[acct]; a != nil && !a.running {
			violations.Add(1)
		}
		r.mu.Unlock()
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, acct := range names {
		wg.Add(1)
		go func(acct string) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r.Publish(msgEvent(event.MessageAppend, acct, "INBOX", 0))
			}
		}(acct)
	}
	deadline := time.Now().Add(3 * time.Second)
	for violations.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	st.stats.setStatusHook(nil)
	if n := violations.Load(); n != 0 {
		t.Errorf("%d STATUS queries ran while the account had no worker on record (two workers at once)", n)
	}
}

// The mailbox list a session has been told is the account's, shared, not a
// copy per session: sessions take the account's new version as they are
// handed each mailbox event, and one that fell behind (an overflow) shares
// it again once it has been told the difference.
func TestSessionsShareMailboxList(t *testing.T) {
	st := overflowStore(t)
	r, _ := newRegistry(t, st.opener())
	idleOut, pollOut := newOut(), newOut()
	idle := register(r, "alice", 1, idleOut, "INBOX", true)
	poll := register(r, "alice", 2, pollOut, "INBOX", false)
	waitQuiet(t, r, idle, poll)
	shares := func(s *Session) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		a := r.accounts["alice"]
		s.mu.Lock()
		defer s.mu.Unlock()
		return a != nil && !s.namesOwn && s.namesGen == a.namesGen && sameNames(s.names, a.names)
	}
	if !shares(idle) || !shares(poll) {
		t.Fatal("sessions do not share the account's mailbox list at registration")
	}

	want := flood(r, "alice", 0, 3)
	waitFor(t, "the idling session's lines", func() bool { return idleOut.Len() == len(want) })
	waitQuiet(t, r, idle, poll)
	if !shares(idle) {
		t.Error("the idling session does not share the list after the mailbox events")
	}
	if shares(poll) {
		t.Error("the polling session shares the new list before it was told")
	}
	poll.Flush()
	if !shares(poll) {
		t.Error("the polling session does not share the list after its Flush")
	}

	// An overflow: the session is told the difference and shares again.
	flood(r, "alice", 3, overflowEvents)
	waitFor(t, "the resynchronisation", func() bool {
		poll.Flush()
		return shares(poll)
	})
}
