// SPDX-License-Identifier: GPL-3.0-or-later

package bus

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/event"
)

// recordingSink records what a bus delivers.
type recordingSink struct {
	mu         sync.Mutex
	events     []event.Event
	reconciled []string
	got        chan struct{}
}

func newSink() *recordingSink { return &recordingSink{got: make(chan struct{}, 100)} }

func (s *recordingSink) Publish(ev event.Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.mu.Unlock()
	s.got <- struct{}{}
}

func (s *recordingSink) Reconcile(acct string) {
	s.mu.Lock()
	s.reconciled = append(s.reconciled, acct)
	s.mu.Unlock()
	s.got <- struct{}{}
}

func (s *recordingSink) ResyncAll() {}

func (s *recordingSink) wait(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-s.got:
		case <-time.After(5 * time.Second):
			t.Fatalf("the sink got %d of %d deliveries", i, n)
		}
	}
}

// logBuf captures log lines.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(stamp time.Time, debug bool, msg string) {
	l.mu.Lock()
	l.b.WriteString(msg + "\n")
	l.mu.Unlock()
}
func (l *logBuf) Close() error { return nil }
func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger() (log.Logger, *logBuf) {
	b := &logBuf{}
	return log.Logger{Out: b, Name: "test"}, b
}

func sockPath(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "bus-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return SocketPath(dir, "notified")
}

// The CLI side's events arrive in order with origin 0; the socket is 0600
// and gone after Close.
func TestSocketDelivers(t *testing.T) {
	path := sockPath(t)
	if filepath.Base(path) != "notify-notified.sock" {
		t.Errorf("SocketPath = %s", path)
	}
	sink := newSink()
	logger, _ := testLogger()
	l, err := ListenSocket(path, sink, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s: %v %v, want a socket with mode 0600", path, fi, err)
	}

	s := NewSocketSender(path, logger)
	s.Publish(event.Event{Kind: event.MailboxCreate, Account: "u", Mailbox: "Box", Delimiter: ".", Attrs: []string{`\HasNoChildren`}, Origin: 7, Time: time.Now()})
	s.Publish(event.Event{Kind: event.MessageAppend, Account: "u", Mailbox: "Box", Origin: 7})
	s.Reconcile("u")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	sink.wait(t, 3)
	sink.mu.Lock()
	if len(sink.events) != 2 || sink.events[0].Kind != event.MailboxCreate || sink.events[0].Mailbox != "Box" ||
		sink.events[0].Attrs[0] != `\HasNoChildren` || sink.events[1].Kind != event.MessageAppend {
		t.Errorf("events: %v", sink.events)
	}
	for _, ev := range sink.events {
		if ev.Origin != 0 || ev.Time.IsZero() {
			t.Errorf("event %v: origin %d, time %v; want origin 0 and a time", ev, ev.Origin, ev.Time)
		}
	}
	if len(sink.reconciled) != 1 || sink.reconciled[0] != "u" {
		t.Errorf("reconciled: %v", sink.reconciled)
	}
	sink.mu.Unlock()

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close the socket file is still there: %v", err)
	}
}

// A line that is no message, carries an invalid event, or is longer than
// MaxSocketLine is logged and dropped and its connection closed; other
// connections go on.
func TestSocketBadLines(t *testing.T) {
	path := sockPath(t)
	sink := newSink()
	logger, logs := testLogger()
	l, err := ListenSocket(path, sink, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	for _, bad := range []string{
		"not json",
		`{"i":"x"}`,
		`{"i":"x","e":{"Kind":"MessageNew","Account":"","Mailbox":"INBOX"}}`,
		`{"i":"x","e":{"Kind":"Bogus","Account":"u","Mailbox":"INBOX"}}`,
		`{"i":"x","r":"` + strings.Repeat("a", MaxSocketLine) + `"}`,
	} {
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		good := `{"i":"x","r":"after"}`
		conn.Write([]byte(bad + "\n" + good + "\n"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("after %.40q the connection was not closed: %v", bad, err)
		}
		conn.Close()
	}
	if n := strings.Count(logs.String(), "closing"); n != 5 {
		t.Errorf("%d log lines about closed connections, want 5:\n%s", n, logs.String())
	}

	// Nothing of the bad connections was delivered, a good one still is.
	s := NewSocketSender(path, logger)
	s.Reconcile("good")
	s.Close()
	sink.wait(t, 1)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.events) != 0 || len(sink.reconciled) != 1 || sink.reconciled[0] != "good" {
		t.Errorf("delivered: events %v, reconciled %v; want only the good connection's", sink.events, sink.reconciled)
	}
}

// A stale socket file (nobody accepts) is replaced; a live one is not,
// and the error names it.
func TestSocketStaleAndInUse(t *testing.T) {
	path := sockPath(t)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	logger, logs := testLogger()
	sink := newSink()
	l, err := ListenSocket(path, sink, logger, nil)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer l.Close()
	if !strings.Contains(logs.String(), "replacing a stale socket") {
		t.Errorf("no log line about the stale socket:\n%s", logs.String())
	}

	_, err = ListenSocket(path, newSink(), logger, nil)
	if !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), path) {
		t.Errorf("a second listener: %v, want ErrSocketInUse naming %s", err, path)
	}
	// The first one still serves.
	s := NewSocketSender(path, logger)
	s.Reconcile("u")
	s.Close()
	sink.wait(t, 1)

	// A path that is no socket is not removed.
	file := filepath.Join(filepath.Dir(path), "notify-file.sock")
	os.WriteFile(file, nil, 0o600)
	if _, err := ListenSocket(file, newSink(), logger, nil); err == nil {
		t.Error("listening over a regular file succeeded")
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the regular file was removed: %v", err)
	}
}

// With no server the sender logs once that nobody was notified and drops
// the rest.
func TestSocketSenderNoServer(t *testing.T) {
	path := sockPath(t)
	logger, logs := testLogger()
	s := NewSocketSender(path, logger)
	s.Publish(event.Event{Kind: event.MailboxCreate, Account: "u", Mailbox: "Box"})
	s.Reconcile("u")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "nobody was notified"); n != 1 || !strings.Contains(logs.String(), path) {
		t.Errorf("%d lines saying nobody was notified, want 1 naming %s:\n%s", n, path, logs.String())
	}
}

// A connection of another user is refused, also when the socket's mode
// would let it in (Linux: SO_PEERCRED). Needs root to connect as nobody.
func TestSocketRefusesOtherUser(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs root on Linux to connect as another user")
	}
	// A system python3 that uid 65534 may run (not a per-user shim).
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("needs " + py + " as the other user's client")
	}
	path := sockPath(t)
	sink := newSink()
	logger, logs := testLogger()
	l, err := ListenSocket(path, sink, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(path, 0o666)

	cmd := exec.Command(py, "-c", `import socket,sys
s=socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
try:
    s.sendall(b'{"i":"x","r":"intruder"}\n')
    print("closed" if s.recv(1) == b"" else "open")
except (BrokenPipeError, ConnectionResetError):
    print("closed")`, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid 65534: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "closed" {
		t.Errorf("the other user's connection was not closed at once: %s", out)
	}
	if !strings.Contains(logs.String(), "refusing a connection of another user") || !strings.Contains(logs.String(), "peer uid 65534") {
		t.Errorf("no log line about the refused user:\n%s", logs.String())
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.reconciled) != 0 {
		t.Errorf("the other user's message was delivered: %v", sink.reconciled)
	}
}
