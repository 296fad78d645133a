// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/foxcpp/maddy/framework/log"
	"github.com/lib/pq"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/metrics"
)

// DefaultChannel is the PostgreSQL notification channel the instances
// share.
const DefaultChannel = "maddy_notify"

// outboundLimit bounds the events waiting to be sent to other instances.
const outboundLimit = 4096

// State is the broker connection state (for metrics and logs).
type State int32

const (
	StateConnecting State = iota
	StateConnected
	StateDisconnected
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Postgres is a bus over PostgreSQL LISTEN/NOTIFY (lib/pq's Listener, which
// reconnects with backoff). Every event is delivered locally at once and
// sent to the other instances; after a reconnect the sink resynchronises by
// state, since notifications sent while the connection was down are lost.
// PostgreSQL being down never blocks IMAP or SMTP: events then stay local.
type Postgres struct {
	sink     Sink
	log      log.Logger
	channel  string
	instance string

	db       *sql.DB
	listener *pq.Listener
	metrics  *metrics.Set

	outbound chan message
	stop     chan struct{}
	wg       sync.WaitGroup

	state      atomic.Int32
	reconnects atomic.Int64
	dropped    atomic.Int64
	closeOnce  sync.Once
}

// Options are the settings of NewPostgres.
type Options struct {
	DSN     string
	Channel string // DefaultChannel when empty
	// MinReconnect and MaxReconnect bound the listener's reconnect backoff
	// (defaults 100ms and 10s).
	MinReconnect, MaxReconnect time.Duration
	// Metrics records the broker's metrics; nil records nothing.
	Metrics *metrics.Set
}

// NewPostgres starts a PostgreSQL bus delivering to sink. It does not wait
// for the database: connecting happens in the background and is logged.
func NewPostgres(o Options, sink Sink, logger log.Logger) (*Postgres, error) {
	if o.DSN == "" {
		return nil, errors.New("bus: postgres: empty DSN")
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.MinReconnect == 0 {
		o.MinReconnect = 100 * time.Millisecond
	}
	if o.MaxReconnect == 0 {
		o.MaxReconnect = 10 * time.Second
	}
	if _, err := pq.ParseURL(o.DSN); err != nil && looksLikeURL(o.DSN) {
		return nil, fmt.Errorf("bus: postgres: invalid DSN: %w", err)
	}
	db, err := sql.Open("postgres", o.DSN)
	if err != nil {
		return nil, fmt.Errorf("bus: postgres: %w", err)
	}
	db.SetMaxOpenConns(2)

	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		db.Close()
		return nil, fmt.Errorf("bus: instance id: %w", err)
	}
	p := &Postgres{
		sink:     sink,
		log:      logger,
		channel:  o.Channel,
		instance: hex.EncodeToString(id),
		db:       db,
		outbound: make(chan message, outboundLimit),
		stop:     make(chan struct{}),
		metrics:  o.Metrics,
	}
	p.state.Store(int32(StateConnecting))
	p.metrics.BrokerConnected(false)
	p.listener = pq.NewDialListener(listenDialer{p}, o.DSN, o.MinReconnect, o.MaxReconnect, p.listenerEvent)
	p.goSafe("listen", p.listen)
	p.goSafe("receive", p.receive)
	p.goSafe("send", p.send)
	return p, nil
}

// listenDialer dials the listener's connections so that Close ends them
// all: lib/pq's Listener, woken from its wait between two attempts, connects
// again even after it was closed, and would then listen for ever. Once the
// bus is stopping, dials fail and the connections dialed are closed.
type listenDialer struct{ p *Postgres }

func (d listenDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d listenDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (d listenDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	select {
	case <-d.p.stop:
		c.Close()
		return nil, errors.New("bus: postgres: closed")
	default:
	}
	sc := &stoppableConn{Conn: c, done: make(chan struct{})}
	go func() {
		select {
		case <-d.p.stop:
			sc.Conn.Close()
		case <-sc.done:
		}
	}()
	return sc, nil
}

// stoppableConn is a listener connection that the bus closes on Close.
type stoppableConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *stoppableConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}

func looksLikeURL(dsn string) bool {
	return len(dsn) > 11 && (dsn[:11] == "postgres://" || (len(dsn) > 13 && dsn[:13] == "postgresql://"))
}

// Instance returns this instance's random id.
func (p *Postgres) Instance() string { return p.instance }

// State returns the connection state.
func (p *Postgres) State() State { return State(p.state.Load()) }

// Reconnects returns how often the connection was re-established.
func (p *Postgres) Reconnects() int64 { return p.reconnects.Load() }

// Dropped returns how many remote copies were dropped (queue full).
func (p *Postgres) Dropped() int64 { return p.dropped.Load() }

func (p *Postgres) goSafe(what string, f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				p.log.Printf("panic in postgres bus %s: %v\n%s", what, r, debug.Stack())
			}
		}()
		f()
	}()
}

func (p *Postgres) listenerEvent(ev pq.ListenerEventType, err error) {
	var st State
	switch ev {
	case pq.ListenerEventConnected:
		st = StateConnected
		p.log.Msg("broker connected", "channel", p.channel)
	case pq.ListenerEventReconnected:
		st = StateConnected
		p.reconnects.Add(1)
		p.metrics.BrokerReconnect()
		p.log.Msg("broker reconnected, resynchronising sessions by state", "channel", p.channel)
	case pq.ListenerEventDisconnected:
		st = StateDisconnected
		p.log.Error("broker disconnected, notifications from other instances are paused", err, "channel", p.channel)
	case pq.ListenerEventConnectionAttemptFailed:
		if p.State() == StateConnecting {
			st = StateConnecting
		} else {
			st = StateDisconnected
		}
		p.log.Error("broker connection attempt failed", err, "channel", p.channel)
	default:
		return
	}
	if p.State() == StateClosed {
		return
	}
	p.state.Store(int32(st))
	p.metrics.BrokerConnected(st == StateConnected)
}

// listen subscribes to the channel; pq's Listen waits until the first
// connection succeeds, which is why it runs on its own goroutine.
func (p *Postgres) listen() {
	if err := p.listener.Listen(p.channel); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) {
		select {
		case <-p.stop:
		default:
			p.log.Error("broker LISTEN failed", err, "channel", p.channel)
		}
	}
}

// receive delivers other instances' events to the sink. A nil notification
// is lib/pq's sign that the connection was re-established and
// notifications may have been lost: the sink resynchronises by state.
func (p *Postgres) receive() {
	ch := p.listener.NotificationChannel()
	for {
		select {
		case <-p.stop:
			return
		case n, ok := <-ch:
			if !ok {
				return
			}
			if n == nil {
				p.sink.ResyncAll()
				continue
			}
			p.deliver(n.Extra)
		}
	}
}

func (p *Postgres) deliver(payload string) {
	m, err := decodeMessage([]byte(payload))
	if err != nil {
		p.log.Error("broker: malformed notification", err, "payload_len", len(payload))
		return
	}
	if m.Instance == p.instance {
		return // delivered locally already
	}
	if err := m.deliverTo(p.sink, p.metrics); err != nil {
		p.log.Error("broker: invalid event from another instance", err)
	}
}

// send writes queued messages with pg_notify, one at a time, over a
// database/sql pool that reconnects on its own.
func (p *Postgres) send() {
	for {
		select {
		case <-p.stop:
			return
		case m := <-p.outbound:
			payload, err := encodeNotification(m, p.log)
			if err != nil {
				p.dropped.Add(1)
				p.metrics.BrokerDropped()
				p.log.Error("broker: cannot send a notification to other instances", err)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = p.db.ExecContext(ctx, "SELECT pg_notify($1, $2)", p.channel, string(payload))
			cancel()
			if err != nil {
				p.dropped.Add(1)
				p.metrics.BrokerDropped()
				p.log.Error("broker: NOTIFY failed, other instances will resynchronise on reconnect", err)
			}
		}
	}
}

// maxPayload is the longest NOTIFY payload PostgreSQL accepts: it refuses
// payloads of 8000 bytes or more.
const maxPayload = 7999

// encodeNotification encodes m for pg_notify. A message too long for a
// notification must not be lost to the other instances: an event is sent
// without its mailbox attributes (which an event may leave unknown), and
// when it is still too long (a very long mailbox name) as a Reconcile of
// its account, so that the other instances catch up by state. Either is
// logged. Only a message that does not fit even so (a Reconcile of an
// account name near 8000 bytes) is an error.
func encodeNotification(m message, logger log.Logger) ([]byte, error) {
	payload, err := encodeMessage(m)
	if err != nil || len(payload) <= maxPayload || m.Event == nil {
		if err == nil && len(payload) > maxPayload {
			err = fmt.Errorf("bus: notification of %d bytes is too long for PostgreSQL (%d at most)", len(payload), maxPayload)
		}
		return payload, err
	}
	ev := *m.Event
	ev.Attrs = nil
	if payload, err = encodeMessage(message{Instance: m.Instance, Event: &ev}); err == nil && len(payload) <= maxPayload {
		logger.Msg("broker: notification too long, sent without mailbox attributes",
			"kind", ev.Kind.String(), "account", ev.Account)
		return payload, nil
	}
	logger.Msg("broker: notification too long, other instances reconcile the account instead",
		"kind", ev.Kind.String(), "account", ev.Account)
	return encodeNotification(message{Instance: m.Instance, Reconcile: ev.Account}, logger)
}

func (p *Postgres) enqueue(m message) {
	m.Instance = p.instance
	select {
	case p.outbound <- m:
	default:
		p.dropped.Add(1)
		p.metrics.BrokerDropped()
		p.log.Msg("broker: outbound queue full, dropping a notification for other instances")
	}
}

// Publish delivers ev locally and queues it for the other instances.
func (p *Postgres) Publish(ev event.Event) {
	p.sink.Publish(ev)
	ev = ev.Clone()
	p.enqueue(message{Event: &ev})
}

// Reconcile reconciles account locally and on the other instances.
func (p *Postgres) Reconcile(account string) {
	p.sink.Reconcile(account)
	p.enqueue(message{Reconcile: account})
}

// Close stops the bus and waits for its goroutines.
func (p *Postgres) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.state.Store(int32(StateClosed))
		close(p.stop)
		err = p.listener.Close()
		p.wg.Wait()
		if cerr := p.db.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
