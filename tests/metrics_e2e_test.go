// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of the module's Prometheus metrics: maddy runs with an
// `openmetrics` endpoint on a loopback port, the tests change mailboxes
// over IMAP and SMTP, scrape /metrics as Prometheus would (text format,
// parsed with prometheus/common/expfmt) and hold the counters to the exact
// amounts the changes must move them by. Where the module's work is
// asynchronous (the account's STATUS queries, the sessions' writers), the
// tests wait for the lines a listening session must get, or poll the
// metric with a deadline, before they compare.

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// metricsEndpoint is maddy's openmetrics endpoint (docs/reference/
// endpoints/openmetrics.md in maddy v0.8.2): it serves the default
// Prometheus registry, where package metrics registers its collectors.
const metricsEndpoint = `
openmetrics tcp://127.0.0.1:{port:metrics} { }
`

// metricsPrefix starts the name of every metric of the module.
// startNotifyMetrics starts maddy with notifyConfig() and the
// openmetrics endpoint (port "metrics").
func startNotifyMetrics(t *testing.T) *testkit.Server {
	t.Helper()
	return testkit.Start(t, testkit.Options{
		Config: notifyConfig() + metricsEndpoint,
		Ports:  []string{"imap", "smtp", "metrics"},
	})
}

const metricsPrefix = "maddy_notify_"

// Metric names, as docs/metrics.md lists them.
const (
	mEventsPublished  = "maddy_notify_events_published_total"
	mEventsReceived   = "maddy_notify_events_received_total"
	mResponsesPushed  = "maddy_notify_responses_pushed_total"
	mSessions         = "maddy_notify_sessions"
	mSessionsIdling   = "maddy_notify_sessions_idling"
	mQueueOverflows   = "maddy_notify_queue_overflows_total"
	mResyncs          = "maddy_notify_resyncs_total"
	mStatusQueries    = "maddy_notify_status_queries_total"
	mPushLatency      = "maddy_notify_push_latency_seconds"
	mBrokerConnected  = "maddy_notify_broker_connected"
	mBrokerReconnects = "maddy_notify_broker_reconnects_total"
	mBrokerDropped    = "maddy_notify_broker_dropped_total"
)

// metricsLabels are the only label names the module may use: the block
// name and small closed sets. An account or mailbox name in a label would
// make one series per user.
var metricsLabels = map[string][]string{
	"module": {notify},
	"kind": {
		// events_published_total, events_received_total: RFC 5423
		// kinds and Reconcile (an SMTP delivery into a store that does
		// not tell the mailbox).
		"MessageNew", "MessageAppend", "MessageExpunge", "FlagChange",
		"MailboxCreate", "MailboxDelete", "MailboxRename", "SubscriptionChange", "Reconcile",
		// responses_pushed_total, push_latency_seconds.
		"EXISTS", "EXPUNGE", "FETCH", "STATUS", "LIST", "keepalive",
	},
	"reason": {"overflow", "reconnect"},
}

// scrape is one scrape of /metrics: the metric families by name.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics gets http://ADDR/metrics from srv's openmetrics endpoint
// (port "metrics") and parses it.
func scrapeMetrics(t *testing.T, srv *testkit.Server) scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), expectWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.Addr("metrics")+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape /metrics: %s", resp.Status)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// series returns the series name{module="notified_mailboxes", labels...}
// (labels are name, value pairs; the series must have no other label) and
// its family's type, or nil if it is absent: a labelled series appears at
// its first use.
func (s scrape) series(name string, labels ...string) (*dto.Metric, dto.MetricType) {
	f := s[name]
	if f == nil {
		return nil, 0
	}
	want := map[string]string{"module": notify}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		match := len(m.GetLabel()) == len(want)
		for _, l := range m.GetLabel() {
			match = match && want[l.GetName()] == l.GetValue()
		}
		if match {
			return m, f.GetType()
		}
	}
	return nil, 0
}

// value returns a counter's or gauge's value, or a histogram's sample
// count, of the series name{labels} (see series); an absent series is 0.
func (s scrape) value(name string, labels ...string) float64 {
	m, typ := s.series(name, labels...)
	switch {
	case m == nil:
		return 0
	case typ == dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case typ == dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case typ == dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	panic(fmt.Sprintf("metrics test: %s is a %v", name, typ))
}

// sum returns the sample sum of the histogram series name{labels} (0 if
// absent).
func (s scrape) sum(name string, labels ...string) float64 {
	m, _ := s.series(name, labels...)
	return m.GetHistogram().GetSampleSum()
}

// kinds returns the values of the kind label of name's series.
func (s scrape) kinds(name string) []string {
	var out []string
	for _, m := range s[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "kind" {
				out = append(out, l.GetValue())
			}
		}
	}
	return out
}

// metricDelta is the amount by which the series name{labels} (see
// scrape.series) must move between two scrapes.
type metricDelta struct {
	name   string
	labels []string
	want   float64
}

// checkDeltas fails the test unless every series moved from before to after
// by exactly its wanted amount (an absent series counts as 0).
func checkDeltas(t *testing.T, before, after scrape, deltas ...metricDelta) {
	t.Helper()
	for _, d := range deltas {
		b, a := before.value(d.name, d.labels...), after.value(d.name, d.labels...)
		if got := a - b; got != d.want {
			t.Errorf("%s%s moved by %v (from %v to %v), want %v", d.name, fmtLabels(d.labels), got, b, a, d.want)
		}
	}
}

func fmtLabels(labels []string) string {
	parts := []string{`module="` + notify + `"`}
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// waitMetric scrapes srv until the series name{labels} has the value want
// (an absent series counts as 0), and fails the test if it does not within
// expectWait. Gauges and the account's STATUS work change asynchronously;
// the polling interval is not for correctness.
func waitMetric(t *testing.T, srv *testkit.Server, want float64, name string, labels ...string) scrape {
	t.Helper()
	deadline := time.Now().Add(expectWait)
	for {
		s := scrapeMetrics(t, srv)
		if got := s.value(name, labels...); got == want {
			return s
		} else if time.Now().After(deadline) {
			t.Fatalf("%s%s = %v after %v, want %v", name, fmtLabels(labels), got, expectWait, want)
		}
		<-time.After(20 * time.Millisecond) // polling interval
	}
}

// checkLabels fails the test unless every maddy_notify_* series has only
// the labels of metricsLabels with their known values: no account, no
// mailbox, nothing unbounded.
func checkLabels(t *testing.T, s scrape, secrets ...string) {
	t.Helper()
	n := 0
	for name, f := range s {
		if !strings.HasPrefix(name, metricsPrefix) {
			continue
		}
		for _, m := range f.GetMetric() {
			n++
			for _, l := range m.GetLabel() {
				allowed, ok := metricsLabels[l.GetName()]
				if !ok {
					t.Errorf("%s has label %s=%q; only module, kind and reason are allowed", name, l.GetName(), l.GetValue())
					continue
				}
				if !slices.Contains(allowed, l.GetValue()) {
					t.Errorf("%s has label %s=%q, not one of %q", name, l.GetName(), l.GetValue(), allowed)
				}
				for _, sec := range secrets {
					if strings.Contains(strings.ToLower(l.GetValue()), strings.ToLower(sec)) {
						t.Errorf("%s has label %s=%q, which names %q", name, l.GetName(), l.GetValue(), sec)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("no %s* series in the scrape", metricsPrefix)
	}
}

// checkTypes fails the test unless the families present have their
// documented type.
func checkTypes(t *testing.T, s scrape) {
	t.Helper()
	types := map[string]dto.MetricType{
		mEventsPublished: dto.MetricType_COUNTER, mEventsReceived: dto.MetricType_COUNTER,
		mResponsesPushed: dto.MetricType_COUNTER, mSessions: dto.MetricType_GAUGE,
		mSessionsIdling: dto.MetricType_GAUGE, mQueueOverflows: dto.MetricType_COUNTER,
		mResyncs: dto.MetricType_COUNTER, mStatusQueries: dto.MetricType_COUNTER,
		mPushLatency: dto.MetricType_HISTOGRAM, mBrokerConnected: dto.MetricType_GAUGE,
		mBrokerReconnects: dto.MetricType_COUNTER, mBrokerDropped: dto.MetricType_COUNTER,
	}
	for name, f := range s {
		if !strings.HasPrefix(name, metricsPrefix) {
			continue
		}
		want, ok := types[name]
		if !ok {
			t.Errorf("undocumented metric %s (add it to docs/metrics.md and this test)", name)
			continue
		}
		if f.GetType() != want {
			t.Errorf("%s is a %v, want %v", name, f.GetType(), want)
		}
	}
}

// TestMetricsEndToEnd: one session (B) idles on INBOX, another (A) has a
// quiet mailbox selected and changes the account: 2 APPENDs to INBOX, 3 to
// Archive, an SMTP delivery to INBOX and a CREATE; a third (C) changes a
// flag in INBOX. Each counter moves by exactly what B was sent and what the
// module published and queried; the session gauges follow the sessions in
// and out; no series names an account or a mailbox; with `broker none`
// there are no broker series.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	srv := startNotifyMetrics(t)

	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	mustOK(t, "CREATE Quiet", a.Create("Quiet", nil).Wait())
	boxes, err := a.List("", "*", nil).Collect()
	mustOK(t, `LIST "" "*"`, err)
	if len(boxes) != 3 {
		t.Fatalf(`LIST "" "*": %d mailboxes, want INBOX, Archive and Quiet (the STATUS counts below assume it)`, len(boxes))
	}

	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")
	b.Idle()
	waitMetric(t, srv, 1, mSessions)
	waitMetric(t, srv, 1, mSessionsIdling)
	// B's SELECT registered the account's first session: the account
	// learns the current STATUS of every mailbox in scope (all three),
	// without telling anyone. Nothing else has queried yet in this
	// process, so the counter is exactly that.
	waitMetric(t, srv, 3, mStatusQueries)

	// A is registered too once it selects a mailbox. Quiet never changes,
	// so the store sends A nothing, and A never polls (no NOOP, CHECK,
	// IDLE or APPEND to Quiet): whatever the module queues for A is never
	// written, and every pushed response counted below is B's.
	_, err = a.Select("Quiet", nil).Wait()
	mustOK(t, "SELECT Quiet", err)
	waitMetric(t, srv, 2, mSessions)
	before := waitMetric(t, srv, 1, mSessionsIdling)
	queries := before.value(mStatusQueries)

	// Two APPENDs to INBOX, which B has selected: the store's EXISTS (and
	// RECENT, which is not a kind of its own), then the module's FETCH.
	// Each APPEND is one STATUS query of INBOX, whose line B does not get
	// (it has INBOX selected); waiting for it keeps two APPENDs from
	// sharing one query.
	for i := 1; i <= 2; i++ {
		appendMsg(t, a, "INBOX", fmt.Sprintf("inbox %d", i))
		b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", i), fmt.Sprintf("* %d RECENT", i))
		expectNewMessage(t, b, i)
		queries++
		waitMetric(t, srv, queries, mStatusQueries)
	}

	// Three APPENDs to Archive: one STATUS query and one STATUS line each.
	for i := 1; i <= 3; i++ {
		appendMsg(t, a, "Archive", fmt.Sprintf("archive %d", i))
		b.Expect(t, expectWait, status(`"Archive"`, i, i+1, i))
		queries++
	}

	// SMTP delivery to INBOX: the store's EXISTS and the module's FETCH;
	// the delivery's MessageNew is one STATUS query of INBOX (A has Quiet
	// selected), whose line B does not get (it has INBOX selected).
	testkit.SendMail(t, srv.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("delivered"))
	b.Expect(t, expectWait, "* 3 EXISTS", "* 3 RECENT")
	expectNewMessage(t, b, 3)
	queries++
	waitMetric(t, srv, queries, mStatusQueries)

	// CREATE: one LIST line.
	mustOK(t, "CREATE Fresh", a.Create("Fresh", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Fresh"`, d))

	// STORE +FLAGS.SILENT by a third session, C, in INBOX: the store's
	// FETCH FLAGS to B, counted under FETCH like the module's FETCH of new
	// messages (C's own is silent, and C never polls either). UNSEEN
	// changed: one STATUS query of INBOX, whose line B does not get.
	c := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	_, err = c.Select("INBOX", nil).Wait()
	mustOK(t, "SELECT INBOX", err)
	waitMetric(t, srv, 3, mSessions)
	store(t, c, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, expectWait, `* 1 FETCH (FLAGS (\Seen \Recent) UID 1)`)
	queries++
	waitMetric(t, srv, queries, mStatusQueries)
	b.ExpectNothing(t, quietWait)
	after := scrapeMetrics(t, srv)

	checkDeltas(t, before, after,
		// What the hooks and the delivery wrapper published.
		metricDelta{mEventsPublished, []string{"kind", "MessageAppend"}, 5},
		metricDelta{mEventsPublished, []string{"kind", "MessageNew"}, 1},
		metricDelta{mEventsPublished, []string{"kind", "Reconcile"}, 0},
		metricDelta{mEventsPublished, []string{"kind", "MailboxCreate"}, 1},
		metricDelta{mEventsPublished, []string{"kind", "FlagChange"}, 1},
		// What B was sent: 3 EXISTS and 1 FETCH FLAGS from the store; 3
		// FETCH (UID ...), 3 STATUS and 1 LIST from the module.
		metricDelta{mResponsesPushed, []string{"kind", "EXISTS"}, 3},
		metricDelta{mResponsesPushed, []string{"kind", "EXPUNGE"}, 0},
		metricDelta{mResponsesPushed, []string{"kind", "FETCH"}, 4},
		metricDelta{mResponsesPushed, []string{"kind", "STATUS"}, 3},
		metricDelta{mResponsesPushed, []string{"kind", "LIST"}, 1},
		// One latency sample per write of the module's lines: each FETCH,
		// STATUS and LIST above was written on its own (the test waited
		// for each). The store's EXISTS and FETCH FLAGS have no sample:
		// the store writes them, the module only counts them.
		metricDelta{mPushLatency, []string{"kind", "FETCH"}, 3},
		metricDelta{mPushLatency, []string{"kind", "STATUS"}, 3},
		metricDelta{mPushLatency, []string{"kind", "LIST"}, 1},
		metricDelta{mPushLatency, []string{"kind", "EXISTS"}, 0},
		// 2 (INBOX) + 3 (Archive) + 1 (the delivery) + 1 (STORE).
		metricDelta{mStatusQueries, nil, 7},
		metricDelta{mQueueOverflows, nil, 0},
		metricDelta{mResyncs, []string{"reason", "overflow"}, 0},
		metricDelta{mResyncs, []string{"reason", "reconnect"}, 0},
	)
	for _, name := range []string{mEventsPublished, mResponsesPushed, mPushLatency} {
		for _, kind := range after.kinds(name) {
			switch {
			case name == mEventsPublished && slices.Contains([]string{"MessageAppend", "MessageNew", "Reconcile", "MailboxCreate", "FlagChange"}, kind),
				name != mEventsPublished && slices.Contains([]string{"EXISTS", "FETCH", "STATUS", "LIST"}, kind):
				continue
			}
			checkDeltas(t, before, after, metricDelta{name, []string{"kind", kind}, 0})
		}
	}
	for _, kind := range []string{"FETCH", "STATUS", "LIST"} {
		n := after.sum(mPushLatency, "kind", kind) - before.sum(mPushLatency, "kind", kind)
		// Each sample is at most the time the test waited for its line.
		if n <= 0 || n > 3*expectWait.Seconds() || math.IsNaN(n) {
			t.Errorf("%s{kind=%q}: the 3 or fewer new samples add up to %vs", mPushLatency+"_sum", kind, n)
		}
	}
	for name, want := range map[string]float64{mSessions: 3, mSessionsIdling: 1} {
		if got := after.value(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	checkTypes(t, after)
	checkLabels(t, after, user, "INBOX", "Archive", "Quiet", "Fresh")
	for _, name := range []string{mBrokerConnected, mBrokerReconnects, mBrokerDropped, mEventsReceived} {
		if f := after[name]; f != nil {
			t.Errorf("broker none, yet %s has series: %v", name, f.GetMetric())
		}
	}

	// B leaves IDLE, then logs out; then A and C log out.
	doneQuiet(t, b)
	waitMetric(t, srv, 0, mSessionsIdling)
	if untagged, tagged := b.Cmd("LOGOUT"); !strings.HasPrefix(tagged, "OK") {
		t.Fatalf("LOGOUT: %q %s", untagged, tagged)
	}
	waitMetric(t, srv, 2, mSessions)
	mustOK(t, "LOGOUT", a.Logout().Wait())
	waitMetric(t, srv, 1, mSessions)
	mustOK(t, "LOGOUT", c.Logout().Wait())
	final := waitMetric(t, srv, 0, mSessions)
	if got := final.value(mSessionsIdling); got != 0 {
		t.Errorf("%s = %v after every session left, want 0", mSessionsIdling, got)
	}

	// Logs: the configuration summary once at start; no per-event line
	// without debug.
	log := srv.Log()
	if n := strings.Count(log, "notifications configured"); n != 1 {
		t.Errorf("%d %q lines in maddy's log, want 1", n, "notifications configured")
	}
	if strings.Contains(log, "storage.notify: event") {
		t.Errorf("per-event lines in maddy's log without debug")
	}
}

// TestMetricsDebugLog: with `debug` in the block, every event the registry
// hands to sessions is logged (DebugMsg); the counters are the same.
func TestMetricsDebugLog(t *testing.T) {
	t.Parallel()
	srv := testkit.Start(t, testkit.Options{
		Config: notifyConfig("debug") + metricsEndpoint,
		Ports:  []string{"imap", "smtp", "metrics"},
	})
	b := idler(t, srv, user, "INBOX")
	waitMetric(t, srv, 1, mSessionsIdling)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Logged", a.Create("Logged", nil).Wait())
	readLines(t, b, expectWait, 1)
	waitMetric(t, srv, 1, mResponsesPushed, "kind", "LIST")
	if log := srv.Log(); !strings.Contains(log, "storage.notify: event") || !strings.Contains(log, "MailboxCreate") {
		t.Errorf("no debug line for the MailboxCreate event in maddy's log")
	}
}

// TestMetricsBroker: with `broker postgres` the broker's gauge is 1 once
// lib/pq's listener has connected; another instance's events count as
// received (by kind) on this one; a lost LISTEN connection counts one
// reconnect and one resync by state, and the gauge is 1 again. Two
// instances share a fresh PostgreSQL database (testkit.Postgres: skipped
// without a server, failed with CI=true).
func TestMetricsBroker(t *testing.T) {
	t.Parallel()
	dsn := testkit.Postgres(t)
	const appName = "notify_metrics_y" // Y's broker connection, to cut it
	config := func(broker string) string {
		return fmt.Sprintf(`
storage.imapsql local_mailboxes {
	driver postgres
	dsn %s
}

storage.notify notified_mailboxes {
	storage &local_mailboxes
	plain_clients draft
	broker %s
}
`, dsn, broker) + notifyEndpoints + metricsEndpoint
	}
	ports := []string{"imap", "smtp", "metrics"}
	// One after the other: go-imap-sql creates its schema at start.
	x := testkit.Start(t, testkit.Options{Config: config("postgres"), Ports: ports})
	y := testkit.Start(t, testkit.Options{Config: config(fmt.Sprintf("postgres %s application_name=%s", dsn, appName)), Ports: ports})
	waitMetric(t, x, 1, mBrokerConnected)
	waitMetric(t, y, 1, mBrokerConnected)

	// A client of X changes the account; no session needs to be
	// registered anywhere for events to be published and received.
	a := testkit.DialClient(t, x.Addr("imap"), user, pass)
	xBefore := scrapeMetrics(t, x)
	yBefore := scrapeMetrics(t, y)
	mustOK(t, "CREATE Remote", a.Create("Remote", nil).Wait())
	testkit.SendMail(t, x.Addr("smtp"), "sender@maddy.test", []string{user}, testkit.Message("across"))
	// Y receives whether or not it has sessions of the account.
	waitMetric(t, y, 1, mEventsReceived, "kind", "MailboxCreate")
	// The delivery is the MessageNew of the mailbox it filed into.
	yAfter := waitMetric(t, y, 1, mEventsReceived, "kind", "MessageNew")
	xAfter := scrapeMetrics(t, x)
	checkDeltas(t, xBefore, xAfter,
		metricDelta{mEventsPublished, []string{"kind", "MailboxCreate"}, 1},
		metricDelta{mEventsPublished, []string{"kind", "MessageNew"}, 1},
		metricDelta{mEventsPublished, []string{"kind", "Reconcile"}, 0},
		// X hears its own NOTIFY and drops it: delivered locally already.
		metricDelta{mEventsReceived, []string{"kind", "MailboxCreate"}, 0},
		metricDelta{mEventsReceived, []string{"kind", "MessageNew"}, 0},
	)
	checkDeltas(t, yBefore, yAfter,
		metricDelta{mEventsPublished, []string{"kind", "MailboxCreate"}, 0},
		metricDelta{mEventsPublished, []string{"kind", "MessageNew"}, 0},
		metricDelta{mEventsPublished, []string{"kind", "Reconcile"}, 0},
		metricDelta{mEventsReceived, []string{"kind", "Reconcile"}, 0},
	)
	for _, s := range []scrape{xAfter, yAfter} {
		checkDeltas(t, scrape{}, s,
			metricDelta{mBrokerReconnects, nil, 0},
			metricDelta{mBrokerDropped, nil, 0},
			metricDelta{mResyncs, []string{"reason", "reconnect"}, 0},
		)
		checkTypes(t, s)
		checkLabels(t, s, user, "INBOX", "Remote")
	}

	// Cut Y's LISTEN connection, as a restart of its PostgreSQL backend
	// would: lib/pq reconnects at once.
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	deadline := time.Now().Add(expectWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), expectWait)
		res, err := db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = $1 AND application_name = $2 AND query LIKE 'LISTEN%'`,
			testkit.PostgresDBName(dsn), appName)
		cancel()
		if err != nil {
			t.Fatalf("pg_terminate_backend: %v", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no LISTEN connection of Y's broker (application_name %s)", appName)
		}
		<-time.After(20 * time.Millisecond) // polling interval
	}
	waitMetric(t, y, 1, mBrokerReconnects)
	waitMetric(t, y, 1, mResyncs, "reason", "reconnect")
	waitMetric(t, y, 1, mBrokerConnected)
	if got := scrapeMetrics(t, x).value(mBrokerReconnects); got != 0 {
		t.Errorf("X: %s = %v, want 0 (only Y's connection was cut)", mBrokerReconnects, got)
	}
	log := y.Log()
	for _, want := range []string{"broker connected", "broker disconnected", "broker reconnected"} {
		if !strings.Contains(log, want) {
			t.Errorf("Y's log lacks %q", want)
		}
	}
}

// TestMetricsNoStatusQueryWhenAllSelected: while every session of the
// account has INBOX selected, mail into INBOX costs no STATUS query
// (nobody could be told its value); once a session has Archive selected,
// the next message into INBOX is queried once and that session gets the
// exact STATUS line.
func TestMetricsNoStatusQueryWhenAllSelected(t *testing.T) {
	t.Parallel()
	srv := startNotifyMetrics(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())

	b := idler(t, srv, user, "INBOX")
	waitMetric(t, srv, 1, mSessionsIdling)
	// The baseline of the account's first session: INBOX and Archive.
	before := waitMetric(t, srv, 2, mStatusQueries).value(mStatusQueries)
	for i := 1; i <= 2; i++ {
		appendMsg(t, a, "INBOX", fmt.Sprintf("inbox %d", i))
		b.Expect(t, expectWait, fmt.Sprintf("* %d EXISTS", i), fmt.Sprintf("* %d RECENT", i))
		expectNewMessage(t, b, i)
	}
	b.ExpectNothing(t, quietWait)
	if got := scrapeMetrics(t, srv).value(mStatusQueries); got != before {
		t.Errorf("%s = %v after two messages into INBOX, which every session has selected; want %v", mStatusQueries, got, before)
	}

	c := idler(t, srv, user, "Archive")
	waitMetric(t, srv, 2, mSessionsIdling)
	appendMsg(t, a, "INBOX", "inbox 3")
	c.Expect(t, expectWait, status("INBOX", 3, 4, 3))
	c.ExpectNothing(t, quietWait)
	waitMetric(t, srv, before+1, mStatusQueries)
	b.Expect(t, expectWait, "* 3 EXISTS", "* 3 RECENT")
	expectNewMessage(t, b, 3)
	b.ExpectNothing(t, quietWait)
}
