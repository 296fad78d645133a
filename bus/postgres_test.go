// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// pgWait bounds every wait for PostgreSQL in these tests.
const pgWait = 10 * time.Second

// fakeSink records everything a Postgres bus delivers.
type fakeSink struct {
	mu         sync.Mutex
	events     []event.Event
	reconciled []string
	resyncs    int
}

func (s *fakeSink) Publish(ev event.Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
}

func (s *fakeSink) Reconcile(acct string) {
	s.mu.Lock()
	s.reconciled = append(s.reconciled, acct)
	s.mu.Unlock()
}

func (s *fakeSink) ResyncAll() {
	s.mu.Lock()
	s.resyncs++
	s.mu.Unlock()
}

// snapshot returns copies of what the sink got so far.
func (s *fakeSink) snapshot() (events []event.Event, reconciled []string, resyncs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.events...), append([]string(nil), s.reconciled...), s.resyncs
}

// waitFor polls cond until it holds, failing the test after pgWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pgWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, pgWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pgInstance is one broker on the test database, as one maddy instance.
type pgInstance struct {
	bus  *Postgres
	sink *fakeSink
	logs *logBuf
	app  string // application_name of its connections
}

// startPostgres starts a broker on dsn whose connections carry
// application_name app, closed at the end of the test.
func startPostgres(t *testing.T, dsn, app string) *pgInstance {
	t.Helper()
	logger, logs := testLogger()
	sink := &fakeSink{}
	p, err := NewPostgres(Options{
		DSN:          dsn + " application_name=" + app,
		MinReconnect: 20 * time.Millisecond,
		MaxReconnect: 200 * time.Millisecond,
	}, sink, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &pgInstance{bus: p, sink: sink, logs: logs, app: app}
}

// pgAdmin opens a connection pool to the test database.
func pgAdmin(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// listeners counts the LISTEN connections of application app.
func listeners(t *testing.T, db *sql.DB, app string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgWait)
	defer cancel()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&n); err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	return n
}

// waitListening waits until inst is connected and has sent its LISTEN.
func waitListening(t *testing.T, db *sql.DB, inst *pgInstance) {
	t.Helper()
	waitFor(t, inst.app+" LISTEN connection", func() bool {
		return inst.bus.State() == StateConnected && listeners(t, db, inst.app) == 1
	})
}

// newEvent is the i-th test event (a new message in mailbox "Box i" of u).
func newEvent(i int) event.Event {
	return event.Event{Kind: event.MessageNew, Account: "u", Mailbox: fmt.Sprintf("Box %d", i), Origin: 9}
}

// The events of instance A reach B's sink once each, in publication order
// and with origin 0; A's sink gets each of them locally once, and not again
// from PostgreSQL.
func TestPostgresOrder(t *testing.T) {
	dsn := testkit.Postgres(t)
	db := pgAdmin(t, dsn)
	a := startPostgres(t, dsn, "bus_test_a")
	b := startPostgres(t, dsn, "bus_test_b")
	waitListening(t, db, a)
	waitListening(t, db, b)
	if a.bus.Instance() == b.bus.Instance() {
		t.Fatalf("both instances have id %s", a.bus.Instance())
	}

	const n = 500
	for i := 0; i < n; i++ {
		a.bus.Publish(newEvent(i))
	}
	a.bus.Reconcile("u")
	// A marker from B: PostgreSQL delivers notifications in commit order,
	// so once A has B's marker it has had its own 500 back as well.
	waitFor(t, "500 events and a reconcile at B", func() bool {
		evs, rec, _ := b.sink.snapshot()
		return len(evs) >= n && len(rec) >= 1
	})
	b.bus.Reconcile("marker")
	waitFor(t, "B's marker at A", func() bool {
		_, rec, _ := a.sink.snapshot()
		return len(rec) == 2
	})

	evs, rec, resyncs := b.sink.snapshot()
	if len(evs) != n || !reflect.DeepEqual(rec, []string{"u", "marker"}) || resyncs != 0 {
		t.Fatalf("B got %d events, reconciled %q, %d resyncs; want %d, [u marker], 0", len(evs), rec, resyncs, n)
	}
	for i, ev := range evs {
		want := newEvent(i)
		want.Origin = 0
		ev.Time = time.Time{}
		if !reflect.DeepEqual(ev, want) {
			t.Fatalf("B's event %d is %+v, want %+v", i, ev, want)
		}
	}
	evs, rec, resyncs = a.sink.snapshot()
	if len(evs) != n || !reflect.DeepEqual(rec, []string{"u", "marker"}) || resyncs != 0 {
		t.Fatalf("A got %d events, reconciled %q, %d resyncs; want its own %d once, [u marker], 0", len(evs), rec, resyncs, n)
	}
	for i, ev := range evs {
		if want := newEvent(i); !reflect.DeepEqual(ev, want) {
			t.Fatalf("A's event %d is %+v, want %+v (delivered locally as published)", i, ev, want)
		}
	}
	if a.bus.Dropped() != 0 || b.bus.Dropped() != 0 {
		t.Errorf("dropped: A %d, B %d", a.bus.Dropped(), b.bus.Dropped())
	}
}

// An event whose notification would exceed PostgreSQL's payload limit
// (8000 bytes) is not lost to the other instances: many or long mailbox
// attributes are sent as "unknown" (the event without its attributes), and
// a mailbox name too long even then becomes a reconcile of the account.
func TestPostgresPayloadLimit(t *testing.T) {
	dsn := testkit.Postgres(t)
	db := pgAdmin(t, dsn)
	a := startPostgres(t, dsn, "bus_test_a")
	b := startPostgres(t, dsn, "bus_test_b")
	waitListening(t, db, a)
	waitListening(t, db, b)

	attrs := make([]string, 1000)
	for i := range attrs {
		attrs[i] = fmt.Sprintf(`\Attr%d`, i)
	}
	longAttrs := event.Event{Kind: event.MailboxRename, Account: "u", Mailbox: "New", OldMailbox: "Old", Delimiter: ".",
		Attrs: []string{`\HasNoChildren`, `\Long` + strings.Repeat("x", 9000)}, Subscribed: true}
	manyAttrs := event.Event{Kind: event.MailboxCreate, Account: "u", Mailbox: "Box", Delimiter: ".", Attrs: attrs, Subscribed: true}
	longName := event.Event{Kind: event.MailboxCreate, Account: "v", Mailbox: strings.Repeat("Ä", 4500), Delimiter: "."}
	for _, ev := range []event.Event{longAttrs, manyAttrs, longName} {
		if p, _ := encodeMessage(message{Instance: a.bus.Instance(), Event: &ev}); len(p) < 8000 {
			t.Fatalf("the %v test event encodes to %d bytes, not beyond the limit", ev.Kind, len(p))
		}
		a.bus.Publish(ev)
	}
	a.bus.Publish(newEvent(0)) // after them, in order

	waitFor(t, "two events and a reconcile at B", func() bool {
		evs, rec, _ := b.sink.snapshot()
		return len(evs) >= 3 && len(rec) >= 1
	})
	time.Sleep(50 * time.Millisecond) // nothing more comes
	evs, rec, _ := b.sink.snapshot()
	for i := range evs {
		evs[i].Time = time.Time{}
	}
	wantLong := longAttrs
	wantLong.Attrs = nil
	wantMany := manyAttrs
	wantMany.Attrs = nil
	wantLast := newEvent(0)
	wantLast.Origin = 0
	if want := []event.Event{wantLong, wantMany, wantLast}; !reflect.DeepEqual(evs, want) {
		t.Errorf("B got events\n%+v\nwant\n%+v", evs, want)
	}
	if !reflect.DeepEqual(rec, []string{"v"}) {
		t.Errorf("B reconciled %q, want [v] for the event with the too long mailbox name", rec)
	}
	if a.bus.Dropped() != 0 {
		t.Errorf("A dropped %d notifications", a.bus.Dropped())
	}
	aev, _, _ := a.sink.snapshot()
	if len(aev) != 4 || !reflect.DeepEqual(aev[0], longAttrs) || !reflect.DeepEqual(aev[2], longName) {
		t.Errorf("A's sink did not get the 4 events whole")
	}

	// An account name beyond the limit cannot be sent at all: it is
	// counted and logged as dropped.
	a.bus.Reconcile(strings.Repeat("a", 8000))
	waitFor(t, "a dropped notification", func() bool { return a.bus.Dropped() == 1 })
	if !strings.Contains(a.logs.String(), "too long") {
		t.Errorf("no log line about the too long notification:\n%s", a.logs.String())
	}
}

// When B's LISTEN connection is killed, B reconnects, its sink
// resynchronises by state, and events published afterwards arrive again.
func TestPostgresReconnect(t *testing.T) {
	dsn := testkit.Postgres(t)
	db := pgAdmin(t, dsn)
	a := startPostgres(t, dsn, "bus_test_a")
	b := startPostgres(t, dsn, "bus_test_b")
	waitListening(t, db, a)
	waitListening(t, db, b)
	a.bus.Publish(newEvent(0))
	waitFor(t, "the first event at B", func() bool {
		evs, _, _ := b.sink.snapshot()
		return len(evs) == 1
	})

	ctx, cancel := context.WithTimeout(context.Background(), pgWait)
	var killed int
	err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1 AND query LIKE 'LISTEN%'`, b.app).Scan(&killed)
	cancel()
	if err != nil || killed != 1 {
		t.Fatalf("terminating B's LISTEN connection: %d terminated, %v", killed, err)
	}
	waitFor(t, "reconnect of B", func() bool { return b.bus.Reconnects() == 1 && b.bus.State() == StateConnected })
	waitFor(t, "resynchronisation at B", func() bool {
		_, _, resyncs := b.sink.snapshot()
		return resyncs == 1
	})
	waitListening(t, db, b)
	for _, want := range []string{"broker disconnected", "broker reconnected, resynchronising sessions by state"} {
		if !strings.Contains(b.logs.String(), want) {
			t.Errorf("B's log has no %q:\n%s", want, b.logs.String())
		}
	}

	a.bus.Publish(newEvent(1))
	waitFor(t, "the event after the reconnect at B", func() bool {
		evs, _, _ := b.sink.snapshot()
		return len(evs) == 2
	})
	evs, _, resyncs := b.sink.snapshot()
	want := newEvent(1)
	want.Origin = 0
	evs[1].Time = time.Time{}
	if !reflect.DeepEqual(evs[1], want) || resyncs != 1 {
		t.Errorf("B got %+v with %d resyncs, want %+v second and 1 resync", evs, resyncs, want)
	}
	if a.bus.Reconnects() != 0 {
		t.Errorf("A reconnected %d times", a.bus.Reconnects())
	}
	_, _, aResyncs := a.sink.snapshot()
	if aResyncs != 0 {
		t.Errorf("A resynchronised %d times", aResyncs)
	}
}

// brokerGoroutines counts the goroutines of the bus and of lib/pq.
func brokerGoroutines() int {
	return testkit.Goroutines("maddy-notify/bus.(*Postgres)", "github.com/lib/pq.")
}

// waitGoroutines waits (1 s at most) until at most n broker goroutines are
// left, and fails the test with their count otherwise.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for brokerGoroutines() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the broker left after Close, want %d", brokerGoroutines(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close returns at once and ends the goroutines of the broker, also with
// notifications pending; a second Close does no harm.
func TestPostgresClose(t *testing.T) {
	dsn := testkit.Postgres(t)
	db := pgAdmin(t, dsn)
	before := brokerGoroutines()
	a := startPostgres(t, dsn, "bus_test_a")
	b := startPostgres(t, dsn, "bus_test_b")
	waitListening(t, db, a)
	waitListening(t, db, b)
	if brokerGoroutines() <= before {
		t.Fatalf("the count of broker goroutines did not grow: %d", brokerGoroutines())
	}
	for i := 0; i < 200; i++ {
		a.bus.Publish(newEvent(i))
	}
	for _, inst := range []*pgInstance{b, a} {
		start := time.Now()
		inst.bus.Close()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Close of %s took %v", inst.app, d)
		}
		if st := inst.bus.State(); st != StateClosed {
			t.Errorf("%s: state %v after Close", inst.app, st)
		}
	}
	waitGoroutines(t, before)
	waitFor(t, "no LISTEN connection", func() bool {
		return listeners(t, db, a.app) == 0 && listeners(t, db, b.app) == 0
	})
	if err := a.bus.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// closedPort returns a TCP port on 127.0.0.1 that nobody listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// With PostgreSQL unreachable NewPostgres returns at once, events still
// reach the local sink, and Close returns promptly and ends the broker's
// goroutines.
func TestPostgresUnreachable(t *testing.T) {
	before := brokerGoroutines()
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable connect_timeout=1", closedPort(t))
	start := time.Now()
	inst := startPostgres(t, dsn, "bus_test_down")
	if d := time.Since(start); d > time.Second {
		t.Errorf("NewPostgres took %v", d)
	}
	inst.bus.Publish(newEvent(0))
	inst.bus.Reconcile("u")
	evs, rec, _ := inst.sink.snapshot()
	if len(evs) != 1 || !reflect.DeepEqual(evs[0], newEvent(0)) || !reflect.DeepEqual(rec, []string{"u"}) {
		t.Errorf("local sink got %+v and reconciled %q, want the event and [u]", evs, rec)
	}
	waitFor(t, "a failed connection attempt in the log", func() bool {
		return strings.Contains(inst.logs.String(), "broker connection attempt failed")
	})
	if st := inst.bus.State(); st != StateConnecting {
		t.Errorf("state %v, want %v", st, StateConnecting)
	}
	// Let the listener back off between attempts, then close.
	time.Sleep(300 * time.Millisecond)
	start = time.Now()
	inst.bus.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	waitGoroutines(t, before)
}

// Every kind of event survives the wire format (PostgreSQL payloads and
// socket lines) unchanged, with odd mailbox names too; the receiving side
// clears the origin.
func TestWireRoundTrip(t *testing.T) {
	odd := []string{
		"INBOX",
		"Entwürfe/Привет/日本語 📬",
		`quo"te\back\\slash 'single'`,
		"<script>&amp;</script>",
		"tab\there\u2028line\u2029sep\x7f",
		"&AOQ--modified-utf7-looking",
		strings.Repeat("Ä€", 5000),
	}
	when := time.Date(2026, 12, 4, 20, 0, 0, 123456789, time.UTC)
	var evs []event.Event
	for _, k := range event.Kinds() {
		for _, name := range odd {
			ev := event.Event{Kind: k, Account: "user@例え.jp", Mailbox: name, Delimiter: "/", Origin: 42, Time: when}
			switch {
			case k == event.MailboxRename:
				ev.OldMailbox = name + " old"
				ev.Attrs = []string{`\HasNoChildren`, `\Sent`}
				ev.Subscribed = true
			case k.IsMailbox():
				ev.Attrs = []string{`\Noselect`}
				ev.Subscribed = k == event.SubscriptionChange
			}
			if err := ev.Validate(); err != nil {
				t.Fatalf("test event: %v", err)
			}
			evs = append(evs, ev)
		}
	}
	// Some test event sets each field of event.Event, so that the round
	// trip below covers every field.
	typ := reflect.TypeOf(event.Event{})
	for i := 0; i < typ.NumField(); i++ {
		set := false
		for _, ev := range evs {
			set = set || !reflect.ValueOf(ev).Field(i).IsZero()
		}
		if !set {
			t.Errorf("no test event sets Event.%s", typ.Field(i).Name)
		}
	}
	for _, ev := range evs {
		payload, err := encodeMessage(message{Instance: "inst", Event: &ev})
		if err != nil {
			t.Fatalf("encode %v %.20q: %v", ev.Kind, ev.Mailbox, err)
		}
		if strings.ContainsAny(string(payload), "\n\r") {
			t.Errorf("%v %.20q: the encoding has a line break", ev.Kind, ev.Mailbox)
		}
		m, err := decodeMessage(payload)
		if err != nil {
			t.Fatalf("decode %v %.20q: %v", ev.Kind, ev.Mailbox, err)
		}
		if m.Instance != "inst" || m.Event == nil || m.Reconcile != "" || !m.Event.Time.Equal(ev.Time) {
			t.Fatalf("decoded %+v", m)
		}
		got := *m.Event
		got.Time = ev.Time
		if !reflect.DeepEqual(got, ev) {
			t.Errorf("round trip of %v %.20q:\n got %+v\nwant %+v", ev.Kind, ev.Mailbox, got, ev)
		}
		sink := &fakeSink{}
		if err := m.deliverTo(sink, nil); err != nil {
			t.Fatalf("deliverTo: %v", err)
		}
		if len(sink.events) != 1 || sink.events[0].Origin != 0 || sink.events[0].Mailbox != ev.Mailbox {
			t.Errorf("deliverTo of %v delivered %+v, want the event with origin 0", ev.Kind, sink.events)
		}
	}

	payload, err := encodeMessage(message{Instance: "inst", Reconcile: odd[1]})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMessage(payload)
	if err != nil || m.Reconcile != odd[1] || m.Event != nil {
		t.Errorf("reconcile round trip: %+v, %v", m, err)
	}
	if _, err := decodeMessage([]byte(`{"i":"inst"}`)); err != errEmptyMessage {
		t.Errorf("an empty message decoded with %v, want errEmptyMessage", err)
	}
}

// gate is a TCP proxy to the PostgreSQL server of dsn that closes every
// connection at once until it is opened.
type gate struct {
	l    net.Listener
	mu   sync.Mutex
	open bool
	conn []net.Conn
}

func newGate(t *testing.T, dsn string) (*gate, string) {
	t.Helper()
	host, port := "127.0.0.1", "5432"
	for _, kv := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(kv, "host="); ok {
			host = v
		} else if v, ok := strings.CutPrefix(kv, "port="); ok {
			port = v
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{l: l}
	t.Cleanup(g.close)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			open := g.open
			g.mu.Unlock()
			if !open {
				c.Close()
				continue
			}
			s, err := net.Dial("tcp", net.JoinHostPort(host, port))
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conn = append(g.conn, c, s)
			g.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
	return g, fmt.Sprintf("%s host=127.0.0.1 port=%d", dsn, l.Addr().(*net.TCPAddr).Port)
}

func (g *gate) setOpen() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
}

func (g *gate) close() {
	g.l.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conn {
		c.Close()
	}
}

// A Close while the broker waits to retry a failed connection ends it for
// good: when PostgreSQL becomes reachable right after, no connection of the
// closed broker is opened and no goroutine of it stays.
func TestPostgresCloseWhileRetrying(t *testing.T) {
	dsn := testkit.Postgres(t)
	db := pgAdmin(t, dsn)
	g, gated := newGate(t, dsn)
	before := brokerGoroutines()
	logger, logs := testLogger()
	p, err := NewPostgres(Options{
		DSN:          gated + " application_name=bus_test_retry",
		MinReconnect: 300 * time.Millisecond,
		MaxReconnect: 300 * time.Millisecond,
	}, &fakeSink{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a failed connection attempt", func() bool {
		return strings.Contains(logs.String(), "broker connection attempt failed")
	})
	g.setOpen()
	p.Close()
	time.Sleep(600 * time.Millisecond) // past the retry
	if n := listeners(t, db, "bus_test_retry"); n != 0 {
		t.Errorf("%d LISTEN connections of the closed broker", n)
	}
	waitGoroutines(t, before)
}
