// SPDX-License-Identifier: GPL-3.0-or-later

package registry

// Dispatch cost against unrelated sessions (docs/benchmarks.md, scenario 4):
// one event of one account, with 100, 10,000 or 100,000 sessions of other
// accounts registered. An operation is one Publish and the wait until the
// account's one IDLE session has been handed its line (Out.Write), so the
// whole in-process path is measured: the registry's account lookup, the
// account's STATUS work (a fake store that answers at once), the session's
// queue, its writer goroutine and mapping. cmd/notify-bench runs these
// benchmarks and reports the ratio of ns/op between 100,000 and 100
// sessions.
//
//	go test -run '^$' -bench BenchmarkPublishUnrelated ./registry

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// benchSessionsPerAccount is how the unrelated sessions are grouped: ten
// devices per account, as in the scale scenario of cmd/notify-bench.
const benchSessionsPerAccount = 10

func BenchmarkPublishUnrelated(b *testing.B) {
	for _, n := range []int{100, 10_000, 100_000} {
		// One registry per size, shared by the calibration rounds of its
		// sub-benchmarks and closed before the next size is built, so
		// that each size runs with only its own sessions on the heap.
		bb := newBenchRegistry(b, n)
		b.Run(fmt.Sprintf("sessions=%d/STATUS", n), bb.runStatus)
		b.Run(fmt.Sprintf("sessions=%d/LIST", n), bb.runList)
		bb.close()
	}
}

// benchRegistry is a registry with n unrelated sessions and one target
// session (account "target", INBOX selected, in IDLE) whose writes are
// signalled on got.
type benchRegistry struct {
	r   *Registry
	got chan struct{}
	all []*Session
}

func newBenchRegistry(b *testing.B, n int) *benchRegistry {
	b.Helper()
	store := &benchStore{}
	r := New(mapping.AnyTimePolicy(), store.open, log.Logger{Out: log.NopOutput{}, Name: "notify-bench"})
	bb := &benchRegistry{r: r, got: make(chan struct{}, 1)}
	id := uint64(1)
	for i := 0; i < n; i++ {
		acct := "user" + strconv.Itoa(i/benchSessionsPerAccount)
		s := r.Register(acct, id, &benchOut{gone: make(chan struct{})})
		s.Select("INBOX", nil)
		s.SetIdle(true)
		bb.all = append(bb.all, s)
		id++
	}
	out := &benchOut{gone: make(chan struct{}), got: bb.got}
	t := r.Register("target", id, out)
	t.Select("INBOX", nil)
	t.SetIdle(true)
	bb.all = append(bb.all, t)
	if got := r.Sessions(); got != n+1 {
		b.Fatalf("registered %d sessions, want %d", got, n+1)
	}
	return bb
}

func (bb *benchRegistry) close() {
	bb.r.Close()
	bb.all = nil
}

// wait waits for the target session's next write.
func (bb *benchRegistry) wait(b *testing.B) {
	select {
	case <-bb.got:
	case <-time.After(10 * time.Second):
		b.Fatal("the target session got no line within 10 s")
	}
}

// runStatus publishes a MessageAppend in the target's Archive: one STATUS
// query and one STATUS line.
func (bb *benchRegistry) runStatus(b *testing.B) {
	ev := event.Event{Kind: event.MessageAppend, Account: "target", Mailbox: "Archive"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Time = time.Now()
		bb.r.Publish(ev)
		bb.wait(b)
	}
}

// runList publishes a MailboxCreate in the target's account: one LIST
// line, queued to the session directly.
func (bb *benchRegistry) runList(b *testing.B) {
	ev := event.Event{Kind: event.MailboxCreate, Account: "target", Mailbox: "New", Delimiter: ".",
		Attrs: []string{imap.NoInferiorsAttr}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev.Time = time.Now()
		bb.r.Publish(ev)
		bb.wait(b)
	}
}

// benchOut is a connection that accepts every write; writes are signalled
// on got (if set).
type benchOut struct {
	gone chan struct{}
	got  chan struct{}
}

func (o *benchOut) Write([][]byte) error {
	if o.got != nil {
		o.got <- struct{}{}
	}
	return nil
}

func (o *benchOut) LoggedOut() <-chan struct{} { return o.gone }

// benchStore answers the registry's queries at once: every account has
// INBOX and Archive, and every STATUS query returns a new MESSAGES value,
// so that each query yields a line.
type benchStore struct {
	n atomic.Uint32
}

func (st *benchStore) open(acct string) (backend.User, error) {
	return &benchUser{name: acct, st: st}, nil
}

type benchUser struct {
	name string
	st   *benchStore
}

var benchMailboxes = []imap.MailboxInfo{
	{Name: "INBOX", Delimiter: ".", Attributes: []string{imap.NoInferiorsAttr}},
	{Name: "Archive", Delimiter: ".", Attributes: []string{imap.NoInferiorsAttr}},
}

func (u *benchUser) Username() string { return u.name }

func (u *benchUser) ListMailboxes(bool) ([]imap.MailboxInfo, error) { return benchMailboxes, nil }

func (u *benchUser) Status(mbox string, items []imap.StatusItem) (*imap.MailboxStatus, error) {
	st := imap.NewMailboxStatus(mbox, items)
	n := u.st.n.Add(1)
	st.Messages, st.UidNext, st.Unseen = n, n+1, n
	return st, nil
}

func (u *benchUser) SetSubscribed(string, bool) error { return nil }

func (u *benchUser) CreateMessage(string, []string, time.Time, imap.Literal, backend.Mailbox) error {
	return nil
}

func (u *benchUser) GetMailbox(string, bool, backend.Conn) (*imap.MailboxStatus, backend.Mailbox, error) {
	return nil, nil, backend.ErrNoSuchMailbox
}

func (u *benchUser) CreateMailbox(string) error         { return nil }
func (u *benchUser) DeleteMailbox(string) error         { return nil }
func (u *benchUser) RenameMailbox(string, string) error { return nil }
func (u *benchUser) Logout() error                      { return nil }
