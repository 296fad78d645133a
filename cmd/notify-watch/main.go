// SPDX-License-Identifier: GPL-3.0-or-later

// Command notify-watch logs in to an IMAP server, selects a mailbox, sits in
// IDLE and prints every untagged response the server sends, exactly as it
// arrives on the wire, each prefixed with a timestamp (RFC 3339 with
// milliseconds). It is the watcher of the maddy-notify demo and a debugging
// aid for operators: whatever storage.notify pushes (EXISTS, EXPUNGE, FETCH,
// STATUS, LIST, ...) shows up here verbatim.
//
// Usage:
//
//	go run ./cmd/notify-watch -addr 127.0.0.1:1143 -user demo@localhost -pass demo
//	NOTIFY_WATCH_PASS=secret notify-watch -addr mail.example.org:993 -tls -user me@example.org -mailbox Archive
//
// Flags:
//
//	-addr HOST:PORT    server address (default 127.0.0.1:1143)
//	-tls               connect with implicit TLS (IMAPS) instead of plain TCP
//	-tls-skip-verify   accept any server certificate (test servers only)
//	-user NAME         login name
//	-pass PASSWORD     password (default: $NOTIFY_WATCH_PASS)
//	-mailbox NAME      mailbox to SELECT (default INBOX)
//	-idle-restart DUR  re-issue IDLE this often (default 25m, RFC 2177 asks
//	                   clients to do so at least every 29 minutes)
//	-all               also print tagged responses and continuation requests
//
// Responses are printed as raw wire text: a response carrying a literal
// ({N}) is printed as one entry, literal bytes included. Only the trailing
// CRLF is removed. SIGINT or SIGTERM ends IDLE (DONE), logs out and exits 0.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// timestampLayout is RFC 3339 with milliseconds.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// maxEntry bounds the bytes kept of one response (literals included); the
// rest of a longer response is counted and reported, not printed.
const maxEntry = 1 << 20

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "notify-watch:", err)
		os.Exit(1)
	}
}

// config holds the parsed command line.
type config struct {
	addr          string
	useTLS        bool
	tlsSkipVerify bool
	user          string
	pass          string
	mailbox       string
	idleRestart   time.Duration
	all           bool
}

func parseFlags() (config, error) {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:1143", "IMAP server `host:port`")
	flag.BoolVar(&c.useTLS, "tls", false, "connect with implicit TLS (IMAPS) instead of plain TCP")
	flag.BoolVar(&c.tlsSkipVerify, "tls-skip-verify", false, "accept any server certificate (test servers only)")
	flag.StringVar(&c.user, "user", "", "login `name`")
	// Not the flag's default value: -h would print the password.
	flag.StringVar(&c.pass, "pass", "", "`password` (default: $NOTIFY_WATCH_PASS)")
	flag.StringVar(&c.mailbox, "mailbox", "INBOX", "mailbox to SELECT")
	flag.DurationVar(&c.idleRestart, "idle-restart", 25*time.Minute, "re-issue IDLE this often")
	flag.BoolVar(&c.all, "all", false, "also print tagged responses and continuation requests")
	flag.Parse()
	if c.pass == "" {
		c.pass = os.Getenv("NOTIFY_WATCH_PASS")
	}
	switch {
	case flag.NArg() != 0:
		return c, fmt.Errorf("unexpected arguments: %q", flag.Args())
	case c.user == "":
		return c, errors.New("-user is required")
	case c.pass == "":
		return c, errors.New("-pass or NOTIFY_WATCH_PASS is required")
	case c.idleRestart <= 0:
		return c, errors.New("-idle-restart must be positive")
	}
	return c, nil
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	out := &printer{w: os.Stdout, all: cfg.all}
	scheme := "imap"
	if cfg.useTLS {
		scheme = "imaps"
	}
	out.banner(fmt.Sprintf("notify-watch: watching %s of %s at %s://%s (IDLE, re-issued every %s); untagged responses follow, Ctrl-C to stop",
		strconv.Quote(cfg.mailbox), cfg.user, scheme, cfg.addr, cfg.idleRestart))

	conn, err := dial(ctx, cfg)
	if err != nil {
		return err
	}
	client := imapclient.New(&teeConn{Conn: conn, sink: &responseSplitter{emit: out.response}}, &imapclient.Options{
		// Unilateral data is printed from the wire by the splitter; the
		// handlers only keep the client from stalling on it.
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Expunge: func(uint32) {},
			Mailbox: func(*imapclient.UnilateralDataMailbox) {},
			Fetch: func(msg *imapclient.FetchMessageData) {
				for msg.Next() != nil {
				}
			},
			Metadata: func(string, []string) {},
		},
	})
	defer client.Close()

	// A signal during the login sequence below unblocks it by closing the
	// connection; from IDLE on, watch handles signals itself.
	stopClosing := context.AfterFunc(ctx, func() { client.Close() })
	if err := client.WaitGreeting(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("greeting from %s: %w", cfg.addr, err)
	}
	if err := client.Login(cfg.user, cfg.pass).Wait(); err != nil {
		return fmt.Errorf("login as %s: %w", cfg.user, err)
	}
	if _, err := client.Select(cfg.mailbox, nil).Wait(); err != nil {
		return fmt.Errorf("select %s: %w", cfg.mailbox, err)
	}
	if !stopClosing() {
		return nil // interrupted
	}
	return watch(ctx, client, cfg.idleRestart)
}

// dial opens the connection described by cfg: plain TCP, or TLS when
// cfg.useTLS is set.
func dial(ctx context.Context, cfg config) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second}
	if !cfg.useTLS {
		conn, err := d.DialContext(ctx, "tcp", cfg.addr)
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		return conn, nil
	}
	host, _, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", cfg.addr, err)
	}
	td := &tls.Dialer{NetDialer: d, Config: &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: cfg.tlsSkipVerify,
	}}
	conn, err := td.DialContext(ctx, "tcp", cfg.addr)
	if err != nil {
		return nil, fmt.Errorf("connect with TLS: %w", err)
	}
	return conn, nil
}

// watch keeps client in IDLE, re-issuing the command every restart, until
// ctx is cancelled (then it ends IDLE with DONE and logs out, returning nil)
// or the connection breaks (then it returns the cause). It must be called
// from one goroutine, with client in the selected state.
func watch(ctx context.Context, client *imapclient.Client, restart time.Duration) error {
	for {
		idle, err := client.Idle()
		if err != nil {
			return fmt.Errorf("start IDLE: %w", err)
		}
		timer := time.NewTimer(restart)
		var stopping bool
		select {
		case <-ctx.Done():
			stopping = true
		case <-timer.C:
		case <-client.Closed():
			// Nothing left to end: the IDLE command's goroutine stops by
			// itself when the connection is gone.
			timer.Stop()
			return errors.New("connection closed by the server")
		}
		timer.Stop()
		if err := idle.Close(); err != nil {
			return fmt.Errorf("end IDLE: %w", err)
		}
		if err := idle.Wait(); err != nil {
			return fmt.Errorf("end IDLE: %w", err)
		}
		if stopping {
			if err := client.Logout().Wait(); err != nil {
				return fmt.Errorf("logout: %w", err)
			}
			return nil
		}
	}
}

// teeConn is a net.Conn whose received bytes are also written to sink, in
// the goroutine that reads them, before the reader sees them.
type teeConn struct {
	net.Conn
	sink io.Writer
}

// Read reads from the connection and copies what it got to the sink.
func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.sink.Write(p[:n])
	}
	return n, err
}

// responseSplitter cuts the server's byte stream into responses: a line up
// to CRLF, where a line ending in a literal announcement ({N}, {N+} or ~{N})
// continues after the N literal bytes. Each complete response is passed to
// emit with its final CRLF removed. Write must not be called concurrently;
// it never fails.
type responseSplitter struct {
	emit func(resp []byte, dropped int64)

	buf         []byte
	dropped     int64  // bytes of the current response not kept in buf
	tail        []byte // last bytes of the current response, kept even when buf is full
	literalLeft int64  // literal bytes still expected
}

// tailSize is enough for a literal announcement "{N+}\r\n" of any int64 N.
const tailSize = 32

// Write consumes p. It always returns len(p), nil.
func (s *responseSplitter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.literalLeft > 0 {
			k := int64(len(p))
			if k > s.literalLeft {
				k = s.literalLeft
			}
			s.keep(p[:k])
			s.literalLeft -= k
			p = p[k:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keep(p)
			break
		}
		s.keep(p[:i+1])
		p = p[i+1:]
		if size, ok := literalSize(s.tail); ok {
			s.literalLeft = size
			continue
		}
		s.emit(bytes.TrimSuffix(bytes.TrimSuffix(s.buf, []byte("\n")), []byte("\r")), s.dropped)
		s.buf = s.buf[:0]
		s.tail = s.tail[:0]
		s.dropped = 0
	}
	return n, nil
}

// keep appends p to the current response, up to maxEntry bytes.
func (s *responseSplitter) keep(p []byte) {
	if len(p) >= tailSize {
		s.tail = append(s.tail[:0], p[len(p)-tailSize:]...)
	} else {
		s.tail = append(s.tail, p...)
		if len(s.tail) > tailSize {
			s.tail = append(s.tail[:0], s.tail[len(s.tail)-tailSize:]...)
		}
	}
	room := maxEntry - len(s.buf)
	if room < 0 {
		room = 0
	}
	if len(p) > room {
		s.dropped += int64(len(p) - room)
		p = p[:room]
	}
	s.buf = append(s.buf, p...)
}

// literalSize reports whether line (ending in LF) ends with a literal
// announcement and the literal's size.
func literalSize(line []byte) (int64, bool) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	open := bytes.LastIndexByte(line, '{')
	if open < 0 {
		return 0, false
	}
	digits := bytes.TrimSuffix(line[open+1:len(line)-1], []byte("+"))
	size, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || size < 0 || len(digits) == 0 || digits[0] == '+' || digits[0] == '-' {
		return 0, false
	}
	return size, true
}

// printer writes timestamped entries to w. Its methods may be called from
// any goroutine.
type printer struct {
	mu  sync.Mutex
	w   io.Writer
	all bool // print tagged responses and continuation requests too
}

// banner prints one line as is.
func (p *printer) banner(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, line)
}

// response prints resp with a timestamp if it is an untagged response (or
// any response when p.all is set). dropped counts bytes cut off resp.
func (p *printer) response(resp []byte, dropped int64) {
	if !p.all && !bytes.HasPrefix(resp, []byte("* ")) {
		return
	}
	var b bytes.Buffer
	b.WriteString(time.Now().Format(timestampLayout))
	b.WriteByte(' ')
	b.Write(resp)
	if dropped > 0 {
		fmt.Fprintf(&b, " [notify-watch: %d more bytes not shown]", dropped)
	}
	b.WriteByte('\n')
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w.Write(b.Bytes())
}
