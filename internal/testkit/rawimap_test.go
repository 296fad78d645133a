// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer accepts one connection on a loopback port and plays script:
// each step first reads the lines in want (if any) and fails the test on a
// difference, then writes send verbatim. A step with a non-nil gate waits
// for the gate to be closed before it writes.
type step struct {
	want []string
	gate chan struct{}
	send string
}

func fakeServer(t *testing.T, script ...step) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- func() error {
			conn, err := l.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			for i, s := range script {
				for _, w := range s.want {
					line, err := r.ReadString('\n')
					if err != nil {
						return fmt.Errorf("step %d: read: %w", i, err)
					}
					if got := strings.TrimSuffix(line, "\r\n"); got != w {
						return fmt.Errorf("step %d: client sent %q, want %q", i, got, w)
					}
				}
				if s.gate != nil {
					<-s.gate
				}
				if _, err := conn.Write([]byte(s.send)); err != nil {
					return fmt.Errorf("step %d: write: %w", i, err)
				}
			}
			// Hold the connection open until the client closes it.
			r.ReadString('\n')
			return nil
		}()
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		if err := <-errc; err != nil {
			t.Errorf("fake server: %v", err)
		}
	})
	return l.Addr().String()
}

func TestReadLineLiterals(t *testing.T) {
	gate := make(chan struct{})
	addr := fakeServer(t,
		step{send: "* OK fake\r\n" +
			"* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 1)\r\n" +
			// "{1}\r\n" inside a literal's bytes announces nothing.
			"* 2 FETCH (BODY[] {6}\r\na{1}\r\n BODY[1] {0}\r\n)\r\n" +
			"* 3 FETCH (BODY[] {3+}\r\n" + "x"},
		step{gate: gate, send: "yz)\r\n* 4 EXI"},
		step{want: []string{"ping"}, send: "STS\r\n"},
	)
	c := DialRaw(t, addr)
	if c.Greeting != "* OK fake" {
		t.Fatalf("greeting %q", c.Greeting)
	}
	c.Expect(t, time.Second,
		"* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 1)",
		"* 2 FETCH (BODY[] {6}\r\na{1}\r\n BODY[1] {0}\r\n)",
	)

	// A timeout in the middle of a literal loses nothing.
	if _, err := c.ReadLine(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadLine inside a literal: err = %v, want a deadline error", err)
	}
	close(gate)
	c.Expect(t, time.Second, "* 3 FETCH (BODY[] {3+}\r\nxyz)")

	// Nor does one in the middle of a line, but ExpectNothing reports it.
	ft := runFake(func(ft *fakeTB) { c.ExpectNothing(ft, 200*time.Millisecond) })
	if !ft.failed || !strings.Contains(ft.msg, `partial line "* 4 EXI"`) {
		t.Fatalf("ExpectNothing on a partial line: failed=%v msg=%q", ft.failed, ft.msg)
	}
	c.Send("ping")
	c.Expect(t, time.Second, "* 4 EXISTS")
}

func TestCmdIdleDone(t *testing.T) {
	addr := fakeServer(t,
		step{send: "* OK fake\r\n"},
		step{want: []string{`T1 LOGIN "u\"1" "p\\"`}, send: "T1 OK LOGIN done\r\n"},
		step{want: []string{"T2 SELECT INBOX"}, send: "* 0 EXISTS\r\nT2 OK [READ-WRITE] SELECT done\r\n"},
		// An update pushed before the continuation is kept, not dropped.
		step{want: []string{"T3 IDLE"}, send: "* 1 EXISTS\r\n+ idling\r\n* 1 RECENT\r\n"},
		step{want: []string{"DONE"}, send: "* 2 EXISTS\r\nT3 OK IDLE done\r\n"},
		step{want: []string{"T4 NOOP"}, send: "T4 NO nope\r\n"},
	)
	c := DialRaw(t, addr)
	c.Login(`u"1`, `p\`)
	untagged, tagged := c.Cmd("SELECT INBOX")
	if len(untagged) != 1 || untagged[0] != "* 0 EXISTS" || tagged != "OK [READ-WRITE] SELECT done" {
		t.Fatalf("SELECT: %q %q", untagged, tagged)
	}
	c.Idle()
	c.Expect(t, time.Second, "* 1 EXISTS")
	if got := c.Done(); strings.Join(got, "|") != "* 1 RECENT|* 2 EXISTS" {
		t.Fatalf("Done returned %q", got)
	}
	if _, tagged := c.Cmd("NOOP"); tagged != "NO nope" {
		t.Fatalf("NOOP: %q", tagged)
	}
}

func TestExpectReportsDifferences(t *testing.T) {
	addr := fakeServer(t, step{send: "* OK fake\r\n* 1 EXISTS\r\n* 9 RECENT\r\n* 2 EXISTS\r\n"})
	c := DialRaw(t, addr)

	ft := runFake(func(ft *fakeTB) { c.Expect(ft, time.Second, "* 1 EXISTS", "* 1 RECENT") })
	if !ft.failed || !strings.Contains(ft.msg, "line 2 differs") || !strings.Contains(ft.msg, `"* 9 RECENT"`) {
		t.Fatalf("Expect on a wrong line: failed=%v msg=%q", ft.failed, ft.msg)
	}
	ft = runFake(func(ft *fakeTB) { c.ExpectNothing(ft, time.Second) })
	if !ft.failed || !strings.Contains(ft.msg, `unexpected line "* 2 EXISTS"`) {
		t.Fatalf("ExpectNothing on a line: failed=%v msg=%q", ft.failed, ft.msg)
	}
	ft = runFake(func(ft *fakeTB) { c.Expect(ft, 100*time.Millisecond, "* 3 EXISTS") })
	if !ft.failed || !strings.Contains(ft.msg, "waiting for line 1 of 1") {
		t.Fatalf("Expect on silence: failed=%v msg=%q", ft.failed, ft.msg)
	}
}

// fakeTB records the first failure of a helper under test; everything else
// goes to the embedded TB (nil unless runFakeT set it). Fatalf ends the
// goroutine running the helper, like testing.T does.
type fakeTB struct {
	testing.TB
	mu     sync.Mutex
	failed bool
	msg    string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.msg = fmt.Sprintf(format, args...)
	}
	f.failed = true
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// runFake runs fn on its own goroutine with a fakeTB and returns the
// fakeTB once fn has returned or called Fatalf.
func runFake(fn func(*fakeTB)) *fakeTB {
	return runFakeT(nil, fn)
}

// runFakeT is runFake with a fakeTB that passes Cleanup, TempDir, Logf
// and so on to t.
func runFakeT(t testing.TB, fn func(*fakeTB)) *fakeTB {
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ft)
	}()
	<-done
	return ft
}

func TestDonePipelined(t *testing.T) {
	addr := fakeServer(t,
		step{send: "* OK fake\r\n"},
		step{want: []string{"T1 IDLE"}, send: "+ idling\r\n"},
		step{want: []string{"DONE", "x1 NOOP"}, send: "T1 OK IDLE done\r\nx1 OK NOOP done\r\n"},
		step{want: []string{"T2 NOOP"}, send: "T2 OK NOOP done\r\n"},
	)
	c := DialRaw(t, addr)
	c.Idle()
	if tag := c.DonePipelined("x1 NOOP"); tag != "T1" {
		t.Fatalf("DonePipelined returned tag %q, want T1", tag)
	}
	c.Expect(t, time.Second, "T1 OK IDLE done", "x1 OK NOOP done")
	// The IDLE is over: Cmd works again.
	if _, tagged := c.Cmd("NOOP"); tagged != "OK NOOP done" {
		t.Fatalf("NOOP: %q", tagged)
	}
}
