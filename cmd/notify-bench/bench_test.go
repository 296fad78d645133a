// SPDX-License-Identifier: GPL-3.0-or-later

package main

// Unit tests of the harness's arithmetic and parsing; they start no
// process (`make bench` BENCHFLAGS=-quick is the smoke test of the whole).

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	var s samples
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	got := s.summary()
	want := summary{N: 100, P50: 50 * time.Millisecond, P90: 90 * time.Millisecond, P99: 99 * time.Millisecond,
		Max: 100 * time.Millisecond, Min: time.Millisecond}
	if got != want {
		t.Errorf("summary = %+v, want %+v", got, want)
	}
	if (samples{}).summary().N != 0 {
		t.Error("empty series")
	}
	if r := fmtRatio(time.Millisecond, 5*time.Microsecond); r != "n/a" {
		t.Errorf("ratio over 5 µs = %s, want n/a", r)
	}
	if r := fmtRatio(3*time.Millisecond, 2*time.Millisecond); r != "1.500" {
		t.Errorf("ratio = %s", r)
	}
}

func TestStatusValues(t *testing.T) {
	for _, l := range []string{
		`* STATUS "Archive" (MESSAGES 3 UIDNEXT 4 UNSEEN 2)`,
		`* STATUS Archive (UNSEEN 2 UIDNEXT 4 MESSAGES 3)`, // maddy's STATUS command: map order
	} {
		v, ok := statusValues(l)
		if !ok || fmtStatus(v) != "MESSAGES 3 UIDNEXT 4 UNSEEN 2" {
			t.Errorf("statusValues(%q) = %v, %v", l, v, ok)
		}
	}
	if !reStatus("Archive").MatchString(`* STATUS "Archive" (MESSAGES 1)`) ||
		!reStatus("Archive").MatchString(`* STATUS Archive (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 3 UNSEEN 1)`) ||
		reStatus("Archive").MatchString(`* STATUS "Archive2" (MESSAGES 1)`) {
		t.Error("reStatus")
	}
	for _, l := range []string{`* LIST (\HasNoChildren) "." "Box12"`, `* LIST (\NonExistent) "." Box12`, `* LIST () "." Box0`} {
		if !listProbeRe.MatchString(l) {
			t.Errorf("listProbeRe does not match %q", l)
		}
	}
	if !reFetch.MatchString(`* 5 FETCH (UID 40 FLAGS (\Recent) BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 4 1))`) ||
		!reFetch.MatchString(`* 1 FETCH (UID 1 BODYSTRUCTURE ("text" "plain"))`) {
		t.Error("reFetch")
	}
}

func TestBenchLine(t *testing.T) {
	m := benchLineRe.FindStringSubmatch("BenchmarkPublishUnrelated/sessions=100000/STATUS-2   \t   20000\t      4274 ns/op\t    2048 B/op\t      19 allocs/op")
	if m == nil || m[1] != "100000" || m[2] != "STATUS" || m[4] != "4274" || m[6] != "19" {
		t.Errorf("benchLineRe: %q", m)
	}
}

// The reader stamps lines and reads literals as part of their line.
func TestReader(t *testing.T) {
	server, client := net.Pipe()
	c := &imapConn{name: "test", conn: client, lines: make(chan line, 8)}
	go c.read()
	before := time.Now()
	go server.Write([]byte("* 1 FETCH (BODY[] {5}\r\nhello)\r\n* OK done\r\n"))
	l, err := c.next(time.Second)
	if err != nil || l.text != "* 1 FETCH (BODY[] {5}\r\nhello)" || l.at.Before(before) {
		t.Fatalf("first line %q at %v, %v", l.text, l.at, err)
	}
	if l, err := c.next(time.Second); err != nil || l.text != "* OK done" {
		t.Fatalf("second line %q, %v", l.text, err)
	}
	server.Close()
	if _, err := c.next(time.Second); err == nil || !strings.Contains(err.Error(), "connection") {
		t.Fatalf("after close: %v", err)
	}
}

// A line is stamped once it is complete: not before its last part, here
// the end of a literal and the rest of the line, was written.
func TestReaderStampsCompleteLine(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	c := &imapConn{name: "test", conn: client, lines: make(chan line, 8)}
	go c.read()
	mid := make(chan time.Time, 1)
	go func() {
		server.Write([]byte("* 1 FETCH (BODY[] {5}\r\nhel"))
		mid <- time.Now()
		server.Write([]byte("lo)\r\n"))
	}()
	l, err := c.next(time.Second)
	if err != nil || l.text != "* 1 FETCH (BODY[] {5}\r\nhello)" {
		t.Fatalf("line %q, %v", l.text, err)
	}
	if m := <-mid; l.at.Before(m) {
		t.Fatalf("line stamped at %v, before its last part was written at %v", l.at, m)
	}
}
