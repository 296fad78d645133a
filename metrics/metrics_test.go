// SPDX-License-Identifier: GPL-3.0-or-later

package metrics

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// blocks numbers the module labels of the series these tests create in
// the process-wide default registry, so that each test (and each run of
// go test -count=N) starts from series of its own.
var blocks atomic.Int64

func newBlock() string { return fmt.Sprintf("metrics_test_%d", blocks.Add(1)) }

// touchAll records through every method of a Set, once each, so that every
// collector has a series of s's block.
func touchAll(s *Set) {
	s.Published("MessageAppend")
	s.Received("MailboxCreate")
	s.Pushed("STATUS", 2)
	s.Latency("STATUS", 0.003)
	s.SessionsAdd(1)
	s.IdlingAdd(1)
	s.Overflow()
	s.Resync("overflow")
	s.StatusQuery()
	s.BrokerConnected(true)
	s.BrokerReconnect()
	s.BrokerDropped()
}

// touchedMethods is how many methods touchAll calls: a new method (a new
// metric) must be added there, and documented.
const touchedMethods = 12

// gathered returns the module's families in the default registry, with
// only block's series.
func gathered(t *testing.T, block string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), namespace+"_"+subsystem+"_") {
			continue
		}
		var mine []*dto.Metric
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "module" && l.GetValue() == block {
					mine = append(mine, m)
				}
			}
		}
		f.Metric = mine
		out[f.GetName()] = f
	}
	return out
}

// TestNilSet: a nil *Set records nothing and does not panic.
func TestNilSet(t *testing.T) {
	var s *Set
	touchAll(s)
}

// TestSetRecords: every method moves its own series by what it was given,
// with the block name as the module label and only the bounded labels.
func TestSetRecords(t *testing.T) {
	if n := reflect.TypeOf(&Set{}).NumMethod(); n != touchedMethods {
		t.Fatalf("*Set has %d methods, touchAll calls %d: record the new metric in touchAll and document it in docs/metrics.md", n, touchedMethods)
	}
	block := newBlock()
	s := For(block)
	touchAll(s)
	s.Pushed("LIST", 0) // n == 0 creates no series
	s.SessionsAdd(1)
	s.SessionsAdd(-1)

	fams := gathered(t, block)
	// The block's total per family: series that the calls above did not
	// touch may exist at 0.
	want := map[string]float64{
		"maddy_notify_events_published_total":  1,
		"maddy_notify_events_received_total":   1,
		"maddy_notify_responses_pushed_total":  2,
		"maddy_notify_push_latency_seconds":    1, // sample count
		"maddy_notify_sessions":                1,
		"maddy_notify_sessions_idling":         1,
		"maddy_notify_queue_overflows_total":   1,
		"maddy_notify_resyncs_total":           1,
		"maddy_notify_status_queries_total":    1,
		"maddy_notify_broker_connected":        1,
		"maddy_notify_broker_reconnects_total": 1,
		"maddy_notify_broker_dropped_total":    1,
	}
	for name, v := range want {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			t.Errorf("%s: no series of %s", name, block)
			continue
		}
		var got float64
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				got += m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				got += m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				got += float64(m.GetHistogram().GetSampleCount())
			}
			for _, l := range m.GetLabel() {
				if !slices.Contains([]string{"module", "kind", "reason"}, l.GetName()) {
					t.Errorf("%s has label %s: only module, kind and reason keep cardinality bounded", name, l.GetName())
				}
			}
		}
		if got != v {
			t.Errorf("%s = %v for %s, want %v", name, got, block, v)
		}
	}
	if len(fams) != len(want) {
		t.Errorf("%d families, want %d: %v", len(fams), len(want), fams)
	}
	for _, m := range fams["maddy_notify_responses_pushed_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "kind" && l.GetValue() == "LIST" {
				t.Errorf("Pushed(\"LIST\", 0) created a series")
			}
		}
	}
	s.BrokerConnected(false)
	if got := gathered(t, block)["maddy_notify_broker_connected"].GetMetric()[0].GetGauge().GetValue(); got != 0 {
		t.Errorf("broker_connected after BrokerConnected(false) = %v, want 0", got)
	}
}

// docMetric matches a metric heading of docs/metrics.md:
// "### maddy_notify_NAME _type_".
var docMetric = regexp.MustCompile("(?m)^### (maddy_notify_[a-z_]+) _([a-z]+)_$")

// TestDocumented: docs/metrics.md has a section for every metric, with its
// type, and none for a metric that does not exist.
func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range docMetric.FindAllStringSubmatch(string(doc), -1) {
		if _, dup := documented[m[1]]; dup {
			t.Errorf("docs/metrics.md documents %s twice", m[1])
		}
		documented[m[1]] = m[2]
	}
	block := newBlock()
	touchAll(For(block))
	for name, f := range gathered(t, block) {
		typ := strings.ToLower(f.GetType().String())
		switch got, ok := documented[name]; {
		case !ok:
			t.Errorf("docs/metrics.md lacks %q", "### "+name+" _"+typ+"_")
		case got != typ:
			t.Errorf("docs/metrics.md: %s is a %s, documented as %s", name, typ, got)
		}
		delete(documented, name)
	}
	for name := range documented {
		t.Errorf("docs/metrics.md documents %s, which the module does not register", name)
	}
}
