// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/metrics"
)

// MaxSocketLine bounds one line (one encoded message) on the module's unix
// socket. Events from maddy's CLI carry names and attributes; a longer line
// is refused and its connection closed.
const MaxSocketLine = 64 << 10

// socketWriteTimeout bounds a CLI's write to the server's socket.
const socketWriteTimeout = 5 * time.Second

// ErrSocketInUse is wrapped by ListenSocket when a live process already
// listens on the socket: another maddy server with the same runtime_dir and
// a storage.notify block of the same name.
var ErrSocketInUse = errors.New("another running maddy listens on it")

// SocketPath returns the path of the unix socket of the storage.notify
// block named block: notify-BLOCK.sock in runtimeDir (maddy's runtime_dir,
// where maddy's own update pipe keeps sql-HASH.sock).
func SocketPath(runtimeDir, block string) string {
	return filepath.Join(runtimeDir, "notify-"+block+".sock")
}

// SocketListener is the server side of the socket through which maddy's
// CLI (another process on the same machine, same user) hands this
// instance the events of the changes it made. Each connection carries
// newline-delimited messages, encoded as the PostgreSQL broker encodes its
// payloads; their events are published to the sink as if they had
// happened here (origin 0).
type SocketListener struct {
	path    string
	sink    Sink
	log     log.Logger
	metrics *metrics.Set

	ln    *net.UnixListener
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	once  sync.Once
}

// ListenSocket listens on path and delivers what arrives to sink until
// Close. A socket file left behind by a crashed server (nobody accepts on
// it) is replaced; if a live process accepts on it, ListenSocket fails
// with an error wrapping ErrSocketInUse that names path. The socket is
// made accessible to its owner only (0600; maddy's runtime_dir is 0700)
// and, where the system tells (Linux), connections of other users are
// refused. m may be nil.
func ListenSocket(path string, sink Sink, logger log.Logger, m *metrics.Set) (*SocketListener, error) {
	ln, err := listenUnix(path, logger)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bus: socket %s: %w", path, err)
	}
	l := &SocketListener{
		path:    path,
		sink:    sink,
		log:     logger,
		metrics: m,
		ln:      ln,
		stop:    make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
	}
	l.goSafe("accept", l.accept)
	return l, nil
}

// listenUnix listens on path, replacing a stale socket file.
func listenUnix(path string, logger log.Logger) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		if err != nil {
			return nil, fmt.Errorf("bus: listen on %s: %w", path, err)
		}
		return ln, nil
	}
	conn, dialErr := net.DialTimeout("unix", path, time.Second)
	if dialErr == nil {
		conn.Close()
		return nil, fmt.Errorf("bus: socket %s: %w (two servers with the same runtime_dir need storage.notify blocks of different names)", path, ErrSocketInUse)
	}
	fi, statErr := os.Lstat(path)
	if statErr != nil || fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("bus: listen on %s: %w (the path exists and is not a socket)", path, err)
	}
	logger.Msg("replacing a stale socket (left behind by a server that did not shut down)", "path", path, "connect_error", dialErr.Error())
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("bus: remove stale socket %s: %w", path, err)
	}
	ln, err = net.ListenUnix("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("bus: listen on %s: %w", path, err)
	}
	return ln, nil
}

// Path returns the socket's path.
func (l *SocketListener) Path() string { return l.path }

func (l *SocketListener) goSafe(what string, f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() {
			if r := recover(); r != nil {
				l.log.Printf("panic in socket %s: %v\n%s", what, r, debug.Stack())
			}
		}()
		f()
	}()
}

func (l *SocketListener) accept() {
	for {
		conn, err := l.ln.AcceptUnix()
		if err != nil {
			select {
			case <-l.stop:
			default:
				l.log.Error("socket accept failed; maddy's CLI can no longer notify this server", err, "path", l.path)
			}
			return
		}
		if uid, ok, err := peerUID(conn); err != nil || (ok && uid != os.Getuid()) {
			if err == nil {
				err = fmt.Errorf("peer uid %d, this server runs as uid %d", uid, os.Getuid())
			}
			l.log.Error("socket: refusing a connection of another user", err, "path", l.path)
			conn.Close()
			continue
		}
		l.mu.Lock()
		select {
		case <-l.stop:
			l.mu.Unlock()
			conn.Close()
			return
		default:
		}
		l.conns[conn] = struct{}{}
		l.mu.Unlock()
		l.goSafe("read", func() { l.read(conn) })
	}
}

// read delivers the lines of one connection; a line that is too long, not
// a message or carries an invalid event is logged and ends the connection.
func (l *SocketListener) read(conn net.Conn) {
	defer func() {
		l.mu.Lock()
		delete(l.conns, conn)
		l.mu.Unlock()
		conn.Close()
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 0, 4096), MaxSocketLine)
	for sc.Scan() {
		m, err := decodeMessage(sc.Bytes())
		if err == nil {
			if m.Event != nil && m.Event.Time.IsZero() {
				m.Event.Time = time.Now()
			}
			err = m.deliverTo(l.sink, l.metrics)
		}
		if err != nil {
			l.log.Error("socket: dropping a bad message and closing its connection", err, "path", l.path, "len", len(sc.Bytes()))
			return
		}
	}
	if err := sc.Err(); err != nil {
		select {
		case <-l.stop:
		default:
			l.log.Error("socket: read failed, closing the connection", err, "path", l.path)
		}
	}
}

// Close stops listening, closes the open connections, waits for the
// goroutines and removes the socket file. It may be called more than once.
func (l *SocketListener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		close(l.stop)
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
		err = l.ln.Close() // removes the socket file (net.UnixListener's unlink on close)
		l.wg.Wait()
	})
	return err
}

// SocketSender is the CLI side of the socket: it writes each event to the
// running server at once, so that nothing is left to send when the CLI
// exits. When no server listens, the change stays made and the first
// Publish logs that nobody was notified; later ones are dropped silently.
// Its methods are called from the CLI command's goroutine.
type SocketSender struct {
	path string
	log  log.Logger

	mu     sync.Mutex
	conn   net.Conn
	failed bool // the server was not reached: drop the rest
	sent   int
}

// NewSocketSender returns a sender to the socket at path. It does not
// connect until the first message.
func NewSocketSender(path string, logger log.Logger) *SocketSender {
	return &SocketSender{path: path, log: logger}
}

// Publish sends ev to the server.
func (s *SocketSender) Publish(ev event.Event) {
	ev = ev.Clone()
	s.send(message{Event: &ev}, ev.Kind.String())
}

// Reconcile asks the server to reconcile account's sessions by state.
func (s *SocketSender) Reconcile(account string) {
	s.send(message{Reconcile: account}, "Reconcile")
}

func (s *SocketSender) send(m message, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return
	}
	m.Instance = fmt.Sprintf("cli-%d", os.Getpid())
	line, err := encodeMessage(m)
	if err != nil {
		s.log.Error("socket: cannot encode", err)
		return
	}
	if s.conn == nil {
		conn, err := net.DialTimeout("unix", s.path, socketWriteTimeout)
		if err != nil {
			s.failed = true
			s.log.Msg("no running maddy server listens on the socket; the change is made, but nobody was notified",
				"path", s.path, "reason", err.Error())
			return
		}
		s.conn = conn
	}
	s.conn.SetWriteDeadline(time.Now().Add(socketWriteTimeout))
	if _, err := s.conn.Write(append(line, '\n')); err != nil {
		s.failed = true
		s.log.Error("socket: write to the server failed; the change is made, but IDLE sessions were not notified", err, "path", s.path)
		return
	}
	s.sent++
	s.log.DebugMsg("notified the server", "path", s.path, "what", what)
}

// Close closes the connection; everything sent has been written to the
// socket by then, and the server reads it after the CLI has exited too.
func (s *SocketSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	if s.sent > 0 {
		s.log.DebugMsg("server notified", "path", s.path, "messages", s.sent)
	}
	return err
}

// PostgresSender is the CLI side of `broker postgres`: each event is sent
// with pg_notify at once (synchronously, with a timeout), so that the CLI
// never exits with a notification still queued. It does not LISTEN.
type PostgresSender struct {
	db       *sql.DB
	channel  string
	instance string
	log      log.Logger
}

// NewPostgresSender opens (lazily) a connection pool to dsn for sending
// on channel (DefaultChannel when empty).
func NewPostgresSender(dsn, channel string, logger log.Logger) (*PostgresSender, error) {
	if dsn == "" {
		return nil, errors.New("bus: postgres: empty DSN")
	}
	if channel == "" {
		channel = DefaultChannel
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, fmt.Errorf("bus: postgres: %w", err)
	}
	db.SetMaxOpenConns(1)
	return &PostgresSender{db: db, channel: channel, instance: fmt.Sprintf("cli-%d", os.Getpid()), log: logger}, nil
}

// Publish sends ev to every instance.
func (p *PostgresSender) Publish(ev event.Event) {
	ev = ev.Clone()
	p.send(message{Event: &ev})
}

// Reconcile asks every instance to reconcile account's sessions by state.
func (p *PostgresSender) Reconcile(account string) {
	p.send(message{Reconcile: account})
}

func (p *PostgresSender) send(m message) {
	m.Instance = p.instance
	payload, err := encodeNotification(m, p.log)
	if err != nil {
		p.log.Error("broker: cannot send; the change is made, but IDLE sessions were not notified", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), socketWriteTimeout)
	defer cancel()
	if _, err := p.db.ExecContext(ctx, "SELECT pg_notify($1, $2)", p.channel, string(payload)); err != nil {
		p.log.Error("broker: NOTIFY failed; the change is made, but IDLE sessions were not notified", err)
	}
}

// Close closes the connection pool; every Publish has returned by then.
func (p *PostgresSender) Close() error { return p.db.Close() }
