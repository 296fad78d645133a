// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/backend/memory"
	"github.com/emersion/go-message/textproto"
	imapsql "github.com/foxcpp/go-imap-sql"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// waitTimeout bounds every poll; nothing in these tests should take more
// than a fraction of it, even under -race.
const waitTimeout = 15 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// quiet reports whether the registry has nothing in flight: no account
// worker running or owed work, and none of the given idling sessions with
// queued items or inside Flush. Sessions that do not idle keep their queue
// until the test calls Flush.
func quiet(r *Registry, sessions ...*Session) bool {
	r.mu.Lock()
	for _, a := range r.accounts {
		if a.running || len(a.pending) > 0 || a.baseline || a.reconcile || a.relist {
			r.mu.Unlock()
			return false
		}
	}
	r.mu.Unlock()
	for _, s := range sessions {
		s.mu.Lock()
		busy := s.idling && s.dueLocked()
		s.mu.Unlock()
		if busy || !s.flushMu.TryLock() {
			return false
		}
		s.flushMu.Unlock()
	}
	return true
}

func waitQuiet(t testing.TB, r *Registry, sessions ...*Session) {
	t.Helper()
	waitFor(t, "the registry to be quiet", func() bool { return quiet(r, sessions...) })
}

// registryGoroutines counts the goroutines started by a Registry (every
// one runs under goSafe), from the stacks of all goroutines.
func registryGoroutines() int {
	return testkit.Goroutines("registry.(*Registry).goSafe")
}

// fakeOut is a client connection that records what it is sent.
type fakeOut struct {
	mu      sync.Mutex
	lines   []string
	writes  int
	err     error         // returned by Write when set
	block   chan struct{} // when set, Write waits until it is closed
	done    <-chan struct{}
	entered chan struct{} // when set, receives a value each time Write starts

	loggedOut chan struct{}
	logoutMu  sync.Once

	// loggedOutHook, when set, runs each time the registry asks for
	// LoggedOut (a session's writer does at every turn of its loop).
	loggedOutHook func()
}

func newOut() *fakeOut {
	return &fakeOut{loggedOut: make(chan struct{})}
}

// newBlockingOut returns an Out whose Write never returns until release is
// closed, the client logs out, or the registry closes (the Out contract).
func newBlockingOut(r *Registry) (o *fakeOut, release func()) {
	o = newOut()
	o.block = make(chan struct{})
	o.done = r.Done()
	o.entered = make(chan struct{}, 1024)
	var once sync.Once
	return o, func() { once.Do(func() { close(o.block) }) }
}

func (o *fakeOut) Write(lines [][]byte) error {
	o.mu.Lock()
	for _, l := range lines {
		o.lines = append(o.lines, string(l))
	}
	o.writes++
	err := o.err
	o.mu.Unlock()
	if o.entered != nil {
		o.entered <- struct{}{}
	}
	if o.block != nil {
		select {
		case <-o.block:
		case <-o.loggedOut:
			return ErrClosed
		case <-o.done:
			return ErrClosed
		}
	}
	return err
}

func (o *fakeOut) LoggedOut() <-chan struct{} {
	if o.loggedOutHook != nil {
		o.loggedOutHook()
	}
	return o.loggedOut
}

func (o *fakeOut) logout() { o.logoutMu.Do(func() { close(o.loggedOut) }) }

// Lines returns a copy of every line written so far.
func (o *fakeOut) Lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.lines...)
}

func (o *fakeOut) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lines)
}

// Take returns the lines written so far and forgets them.
func (o *fakeOut) Take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.lines
	o.lines = nil
	return l
}

// testStore is a go-imap-sql store on SQLite in a temporary directory.
type testStore struct {
	t     testing.TB
	be    *imapsql.Backend
	stats *userStats
}

func newTestStore(t testing.TB, accounts ...string) *testStore {
	t.Helper()
	return &testStore{t: t, be: testkit.SQLiteStore(t, accounts...), stats: newUserStats()}
}

// user returns a handle of the test's own (not the registry's) on acct.
func (s *testStore) user(acct string) backend.User {
	s.t.Helper()
	u, err := s.be.GetUser(acct)
	if err != nil {
		s.t.Fatal(err)
	}
	return u
}

func (s *testStore) createMailboxes(acct string, names ...string) {
	s.t.Helper()
	u := s.user(acct)
	defer u.Logout()
	for _, n := range names {
		if err := u.CreateMailbox(n); err != nil {
			s.t.Fatalf("create %s: %v", n, err)
		}
	}
}

// setSubscribed subscribes or unsubscribes the mailboxes (go-imap-sql
// creates mailboxes subscribed).
func (s *testStore) setSubscribed(acct string, sub bool, names ...string) {
	s.t.Helper()
	u := s.user(acct)
	defer u.Logout()
	for _, n := range names {
		if err := u.SetSubscribed(n, sub); err != nil {
			s.t.Fatalf("subscribe %s: %v", n, err)
		}
	}
}

const testMessage = "From: a@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"

// appendMsg adds a message to mbox as an IMAP APPEND by another client
// would, without telling the registry.
//
// go-imap-sql on SQLite sometimes fails a write with "database is locked"
// while another connection reads (the registry's STATUS queries); a client
// would retry, and so does the test, a few times.
func (s *testStore) appendMsg(acct, mbox string, flags ...string) {
	s.t.Helper()
	u := s.user(acct)
	defer u.Logout()
	err := testkit.RetryLocked(5, func() error {
		return u.CreateMessage(mbox, flags, time.Now(), bytes.NewBufferString(testMessage), nil)
	})
	if err != nil {
		s.t.Fatalf("append to %s: %v", mbox, err)
	}
}

// deliver adds a message to mbox as an SMTP delivery does (imap_filter
// routing into a folder), without telling the registry.
func (s *testStore) deliver(acct, mbox string) {
	s.t.Helper()
	d := s.be.NewDelivery()
	if err := d.AddRcpt(acct, textproto.Header{}); err != nil {
		s.t.Fatal(err)
	}
	if err := d.Mailbox(mbox); err != nil {
		s.t.Fatal(err)
	}
	if err := d.BodyRaw(strings.NewReader(testMessage)); err != nil {
		s.t.Fatal(err)
	}
	if err := d.Commit(); err != nil {
		s.t.Fatal(err)
	}
}

// setFlags adds flags to every message of mbox (STORE +FLAGS).
func (s *testStore) setFlags(acct, mbox string, flags ...string) {
	s.t.Helper()
	u := s.user(acct)
	defer u.Logout()
	_, m, err := u.GetMailbox(mbox, false, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	defer m.Close()
	var all imap.SeqSet
	all.AddRange(1, 0)
	if err := m.UpdateMessagesFlags(true, &all, imap.AddFlags, true, flags); err != nil {
		s.t.Fatal(err)
	}
}

// statusLine is the STATUS line a STATUS command would return now.
func (s *testStore) statusLine(acct, mbox string, items mapping.StatusItems) string {
	s.t.Helper()
	u := s.user(acct)
	defer u.Logout()
	st, err := u.Status(mbox, items.Request())
	if err != nil {
		s.t.Fatal(err)
	}
	return string(mapping.StatusLine(mbox, items, mapping.StatusOf(st)))
}

// opener is the registry's Opener on this store; the users it returns
// count their calls in s.stats.
func (s *testStore) opener() Opener {
	return func(acct string) (backend.User, error) {
		s.stats.opens.Add(1)
		if p := s.stats.openPanic(acct); p {
			panic("test: opener panics for " + acct)
		}
		u, err := s.be.GetUser(acct)
		if err != nil {
			return nil, err
		}
		return &countingUser{User: u, stats: s.stats}, nil
	}
}

// userStats counts what the registry asks of the store.
type userStats struct {
	opens, logouts atomic.Int64

	mu          sync.Mutex
	status      map[string]int // mailbox → Status calls
	panicStatus map[string]bool
	panicOpen   map[string]bool
	statusHook  func(acct, mbox string) // runs in the registry's worker, before each Status
}

func newUserStats() *userStats {
	return &userStats{status: map[string]int{}, panicStatus: map[string]bool{}, panicOpen: map[string]bool{}}
}

func (st *userStats) Status(mbox string) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.status[mbox]
}

func (st *userStats) openPanic(acct string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.panicOpen[acct]
}

func (st *userStats) setOpenPanic(acct string, on bool) {
	st.mu.Lock()
	st.panicOpen[acct] = on
	st.mu.Unlock()
}

func (st *userStats) setStatusHook(f func(acct, mbox string)) {
	st.mu.Lock()
	st.statusHook = f
	st.mu.Unlock()
}

func (st *userStats) setStatusPanic(mbox string, on bool) {
	st.mu.Lock()
	st.panicStatus[mbox] = on
	st.mu.Unlock()
}

// countingUser is the store's user with its Status and Logout counted.
type countingUser struct {
	backend.User
	stats *userStats
}

func (u *countingUser) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	st := u.stats
	st.mu.Lock()
	st.status[mbox]++ // all accounts together
	panics := st.panicStatus[mbox]
	hook := st.statusHook
	st.mu.Unlock()
	if hook != nil {
		hook(u.User.Username(), mbox)
	}
	if panics {
		panic("test: Status panics for " + mbox)
	}
	return u.User.Status(mbox, items)
}

func (u *countingUser) Logout() error {
	u.stats.logouts.Add(1)
	return u.User.Logout()
}

// register adds a session of acct with mailbox selected ("" for none).
func register(r *Registry, acct string, id uint64, out Out, selected string, idle bool) *Session {
	s := r.Register(acct, id, out)
	if selected != "" {
		s.Select(selected, nil)
	}
	if idle {
		s.SetIdle(true)
	}
	return s
}

func msgEvent(kind event.Kind, acct, mbox string, origin uint64) event.Event {
	return event.Event{Kind: kind, Account: acct, Mailbox: mbox, Origin: origin, Time: time.Now()}
}

// sameLines compares line lists exactly, with a readable failure.
func sameLines(t testing.TB, who string, got, want []string) {
	t.Helper()
	if len(got) == len(want) {
		equal := true
		for i := range got {
			if got[i] != want[i] {
				equal = false
				break
			}
		}
		if equal {
			return
		}
	}
	t.Errorf("%s got %d lines:\n%s\nwant %d lines:\n%s", who, len(got), quoteLines(got), len(want), quoteLines(want))
}

// sameLineSet compares line lists ignoring order (for lines whose order
// follows the store's mailbox listing).
func sameLineSet(t testing.TB, who string, got, want []string) {
	t.Helper()
	g := append([]string(nil), got...)
	w := append([]string(nil), want...)
	sort.Strings(g)
	sort.Strings(w)
	sameLines(t, who, g, w)
}

func quoteLines(lines []string) string {
	if len(lines) > 20 {
		return quoteLines(lines[:10]) + fmt.Sprintf("\n  ... %d more ...\n", len(lines)-20) + quoteLines(lines[len(lines)-10:])
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %q\n", l)
	}
	return b.String()
}

// noPanic runs f and turns a panic into a test failure.
func noPanic(t testing.TB, what string, f func()) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", what, p)
		}
	}()
	f()
}

// memAccount is the one account of go-imap's in-memory backend.
const memAccount = "username"

// memStore is go-imap's in-memory backend. It is not safe for concurrent
// use, so every call (the registry's and the test's) holds one lock.
type memStore struct {
	t     testing.TB
	mu    sync.Mutex
	user  backend.User
	stats *userStats
}

func newMemStore(t testing.TB, mailboxes ...string) *memStore {
	t.Helper()
	u, err := memory.New().Login(nil, memAccount, "password")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mailboxes {
		if err := u.CreateMailbox(m); err != nil {
			t.Fatal(err)
		}
	}
	return &memStore{t: t, user: u, stats: newUserStats()}
}

func (s *memStore) appendMsg(mbox string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.user.CreateMessage(mbox, nil, time.Now(), bytes.NewBufferString(testMessage), nil); err != nil {
		s.t.Fatal(err)
	}
}

func (s *memStore) statusLine(mbox string, items mapping.StatusItems) string {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.user.Status(mbox, items.Request())
	if err != nil {
		s.t.Fatal(err)
	}
	return string(mapping.StatusLine(mbox, items, mapping.StatusOf(st)))
}

func (s *memStore) opener() Opener {
	return func(acct string) (backend.User, error) {
		s.stats.opens.Add(1)
		if acct != memAccount {
			return nil, fmt.Errorf("test: no account %q", acct)
		}
		return &countingUser{User: &lockedUser{mu: &s.mu, User: s.user}, stats: s.stats}, nil
	}
}

// lockedUser serialises the calls the registry makes.
type lockedUser struct {
	mu *sync.Mutex
	backend.User
}

func (u *lockedUser) ListMailboxes(subscribed bool) ([]imap.MailboxInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.User.ListMailboxes(subscribed)
}

func (u *lockedUser) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.User.Status(mbox, items)
}

// newRegistry returns a registry with mapping.AnyTimePolicy on open, logging
// into the returned capture; it is closed when the test ends.
func newRegistry(t testing.TB, open Opener) (*Registry, *testkit.LogCapture) {
	t.Helper()
	logger, logs := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), open, logger)
	t.Cleanup(r.Close)
	return r, logs
}
