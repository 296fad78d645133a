// SPDX-License-Identifier: GPL-3.0-or-later

// Package metrics defines the module's Prometheus metrics, registered in
// the default registry that maddy's openmetrics endpoint serves, with
// maddy's naming (namespace maddy, subsystem notify) and a `module` label
// holding the configuration block name. Labels are bounded: block names,
// event kinds, response kinds, reasons, states; never accounts or
// mailboxes.
//
// The collectors are process-wide, as Prometheus registries are; each
// storage.notify block gets its own Set of labelled children.
//
// metrics imports nothing of this module (imports_test.go holds it), so
// that any of the module's packages may record metrics without an import
// cycle.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

const (
	namespace = "maddy"
	subsystem = "notify"
)

var (
	eventsPublished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "events_published_total",
		Help: "Events published by the storage hooks, by RFC 5423 kind (Reconcile: an SMTP delivery's reconciliation).",
	}, []string{"module", "kind"})
	eventsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "events_received_total",
		Help: "Events received from other instances through the broker, or from maddy's command line, by kind.",
	}, []string{"module", "kind"})
	responsesPushed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "responses_pushed_total",
		Help: "Untagged responses written to IMAP sessions, by kind (EXISTS, EXPUNGE and FETCH FLAGS are the store's, forwarded; FETCH of new messages, STATUS and LIST are the module's).",
	}, []string{"module", "kind"})
	sessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "sessions",
		Help: "IMAP sessions registered for notifications (a mailbox selected).",
	}, []string{"module"})
	idling = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "sessions_idling",
		Help: "Registered sessions currently in IDLE.",
	}, []string{"module"})
	overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "queue_overflows_total",
		Help: "Session queues that overflowed (a client not reading); each is resynchronised by state.",
	}, []string{"module"})
	resyncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "resyncs_total",
		Help: "Resynchronisations by state, by reason (overflow: one session; reconnect: every session of the instance).",
	}, []string{"module", "reason"})
	statusQueries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "status_queries_total",
		Help: "STATUS queries made to the inner store (shared by an account's sessions).",
	}, []string{"module"})
	pushLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "push_latency_seconds",
		Help:    "Time from the store change to the notification bytes handed to the connection.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"module", "kind"})
	brokerUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "broker_connected",
		Help: "1 while the PostgreSQL broker's LISTEN connection is up, 0 otherwise (absent with broker none).",
	}, []string{"module"})
	brokerReconnects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "broker_reconnects_total",
		Help: "Times the broker's connection was re-established.",
	}, []string{"module"})
	brokerDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Subsystem: subsystem, Name: "broker_dropped_total",
		Help: "Notifications for other instances that could not be sent (queue full or NOTIFY failed).",
	}, []string{"module"})
)

func init() {
	prometheus.MustRegister(eventsPublished, eventsReceived, responsesPushed, sessions, idling,
		overflows, resyncs, statusQueries, pushLatency, brokerUp, brokerReconnects, brokerDropped)
}

// Set is the metrics of one storage.notify block. A nil *Set records
// nothing, so code paths used without metrics (tests, the CLI) need no
// checks.
type Set struct {
	module string
}

// For returns the metrics of the block named module. The series that need
// no label but module start at 0, so that rate() and increase() see their
// first increment and dashboards show 0 instead of no data.
func For(module string) *Set {
	sessions.WithLabelValues(module)
	idling.WithLabelValues(module)
	overflows.WithLabelValues(module)
	statusQueries.WithLabelValues(module)
	for _, reason := range []string{"overflow", "reconnect"} {
		resyncs.WithLabelValues(module, reason)
	}
	return &Set{module: module}
}

// Published counts an event published locally, by kind.
func (s *Set) Published(kind string) {
	if s != nil {
		eventsPublished.WithLabelValues(s.module, kind).Inc()
	}
}

// Received counts an event received from another instance or from
// maddy's command line, by kind.
func (s *Set) Received(kind string) {
	if s != nil {
		eventsReceived.WithLabelValues(s.module, kind).Inc()
	}
}

// Pushed counts n untagged responses of a kind written to a session.
func (s *Set) Pushed(kind string, n int) {
	if s != nil && n > 0 {
		responsesPushed.WithLabelValues(s.module, kind).Add(float64(n))
	}
}

// Latency records seconds from a store change to the write of a response
// of kind.
func (s *Set) Latency(kind string, seconds float64) {
	if s != nil {
		pushLatency.WithLabelValues(s.module, kind).Observe(seconds)
	}
}

// SessionsAdd adjusts the registered sessions gauge.
func (s *Set) SessionsAdd(d int) {
	if s != nil {
		sessions.WithLabelValues(s.module).Add(float64(d))
	}
}

// IdlingAdd adjusts the idling sessions gauge.
func (s *Set) IdlingAdd(d int) {
	if s != nil {
		idling.WithLabelValues(s.module).Add(float64(d))
	}
}

// Overflow counts a session queue overflow.
func (s *Set) Overflow() {
	if s != nil {
		overflows.WithLabelValues(s.module).Inc()
	}
}

// Resync counts a resynchronisation by reason ("overflow", "reconnect").
func (s *Set) Resync(reason string) {
	if s != nil {
		resyncs.WithLabelValues(s.module, reason).Inc()
	}
}

// StatusQuery counts a STATUS query to the inner store.
func (s *Set) StatusQuery() {
	if s != nil {
		statusQueries.WithLabelValues(s.module).Inc()
	}
}

// BrokerConnected sets the broker connection gauge. The first call (the
// broker starting) also starts the broker's counters at 0.
func (s *Set) BrokerConnected(up bool) {
	if s == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	brokerUp.WithLabelValues(s.module).Set(v)
	brokerReconnects.WithLabelValues(s.module)
	brokerDropped.WithLabelValues(s.module)
}

// BrokerReconnect counts a broker reconnect.
func (s *Set) BrokerReconnect() {
	if s != nil {
		brokerReconnects.WithLabelValues(s.module).Inc()
	}
}

// BrokerDropped counts a notification not sent to other instances.
func (s *Set) BrokerDropped() {
	if s != nil {
		brokerDropped.WithLabelValues(s.module).Inc()
	}
}
