// SPDX-License-Identifier: GPL-3.0-or-later

package imapwire

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// lineCases are server output and the lines Next must return from it, in
// order, followed by io.EOF with rest as the unfinished line (Partial).
var lineCases = []struct {
	name string
	in   string
	want []string
	rest string
}{
	{name: "plain", in: "* OK hi\r\n* 1 EXISTS\r\nT1 OK done\r\n",
		want: []string{"* OK hi", "* 1 EXISTS", "T1 OK done"}},
	{name: "empty", in: ""},
	{name: "empty line", in: "\r\n\n* 1 EXISTS\r\n", want: []string{"", "", "* 1 EXISTS"}},
	{name: "LF and CRLF", in: "* OK lf\n* 1 EXISTS\r\n* 2 EXISTS\n",
		want: []string{"* OK lf", "* 1 EXISTS", "* 2 EXISTS"}},
	{name: "CR inside a line", in: "* OK a\rb\r\n", want: []string{"* OK a\rb"}},
	{name: "unfinished line", in: "* 1 EXISTS\r\n* 2 EXI", want: []string{"* 1 EXISTS"}, rest: "* 2 EXI"},
	{name: "literal", in: "* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 1)\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {5}\r\nab\r\nc UID 1)", "* 2 EXISTS"}},
	{name: "non-synchronizing literal", in: "* 1 FETCH (BODY[] {3+}\r\nxyz)\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {3+}\r\nxyz)", "* 2 EXISTS"}},
	{name: "literal after LF", in: "* 1 FETCH (BODY[] {2}\nab)\n* 2 EXISTS\n",
		want: []string{"* 1 FETCH (BODY[] {2}\nab)", "* 2 EXISTS"}},
	{name: "empty literal", in: "* 1 FETCH (BODY[] {0}\r\n UID 1)\r\n",
		want: []string{"* 1 FETCH (BODY[] {0}\r\n UID 1)"}},
	{name: "announcement inside a literal", in: "* 1 FETCH (BODY[] {7}\r\nab{3}\r\n UID 1)\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {7}\r\nab{3}\r\n UID 1)", "* 2 EXISTS"}},
	{name: "literal that is an announcement", in: "* 1 FETCH (BODY[] {5}\r\n{3}\r\n)\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {5}\r\n{3}\r\n)", "* 2 EXISTS"}},
	// An announcement's text is all outside the literal: one that would
	// straddle the literal's end is data.
	{name: "literal that ends in a brace", in: "* 1 FETCH (BODY[] {4}\r\nab{3}\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {4}\r\nab{3}", "* 2 EXISTS"}},
	{name: "literal that ends in CR", in: "* 1 FETCH (BODY[] {5}\r\na{3}\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[] {5}\r\na{3}\r", "* 2 EXISTS"}},
	{name: "literal that ends in LF", in: "* 1 FETCH (BODY[] {4}\r\nab\r\n)\r\n",
		want: []string{"* 1 FETCH (BODY[] {4}\r\nab\r\n)"}},
	{name: "two literals", in: "* 2 FETCH (BODY[1] {2}\r\nxy BODY[2] {3+}\r\na\nc)\r\n* 3 EXISTS\r\n",
		want: []string{"* 2 FETCH (BODY[1] {2}\r\nxy BODY[2] {3+}\r\na\nc)", "* 3 EXISTS"}},
	{name: "literal right after a literal", in: "* X {2}\r\nab{1}\r\nc\r\n* 3 EXISTS\r\n",
		want: []string{"* X {2}\r\nab{1}\r\nc", "* 3 EXISTS"}},
	{name: "literal at the end of the line", in: "* X {2}\r\nab\r\n* 3 EXISTS\r\n",
		want: []string{"* X {2}\r\nab", "* 3 EXISTS"}},
	{name: "not announcements",
		in:   "* OK {abc}\r\n* OK {}\r\n* OK {+}\r\n* OK {5} x\r\n* OK 5}\r\n* OK {5}}\r\n* OK {5+ }\r\n* OK {-1}\r\n",
		want: []string{"* OK {abc}", "* OK {}", "* OK {+}", "* OK {5} x", "* OK 5}", "* OK {5}}", "* OK {5+ }", "* OK {-1}"}},
	{name: "unfinished literal", in: "* 1 FETCH (BODY[] {5}\r\nab", rest: "* 1 FETCH (BODY[] {5}\r\nab"},
	{name: "line longer than the buffer",
		in:   "* OK " + strings.Repeat("x", 100) + "\r\n* 1 EXISTS\r\n",
		want: []string{"* OK " + strings.Repeat("x", 100), "* 1 EXISTS"}},
	{name: "long line with literals",
		in: "* 1 FETCH (BODY[1] " + strings.Repeat("y", 40) + " {40}\r\n" + strings.Repeat("z", 40) +
			" BODY[2] {3}\r\n{3}" + strings.Repeat("w", 40) + ")\r\n* 2 EXISTS\r\n",
		want: []string{"* 1 FETCH (BODY[1] " + strings.Repeat("y", 40) + " {40}\r\n" + strings.Repeat("z", 40) +
			" BODY[2] {3}\r\n{3}" + strings.Repeat("w", 40) + ")", "* 2 EXISTS"}},
}

// timeout is the error the flaky readers return: what a connection with a
// read deadline returns.
var timeout = os.ErrDeadlineExceeded

// flaky returns at most one byte per Read. With sep it returns (0, timeout)
// before every byte; otherwise every byte comes with timeout.
type flaky struct {
	in  []byte
	sep bool
	err bool // sep: the last Read returned the error
}

func (f *flaky) Read(p []byte) (int, error) {
	if len(f.in) == 0 {
		return 0, io.EOF
	}
	if f.sep && !f.err {
		f.err = true
		return 0, timeout
	}
	f.err = false
	p[0], f.in = f.in[0], f.in[1:]
	if f.sep {
		return 1, nil
	}
	return 1, timeout
}

// readAll calls Next until io.EOF, calling again after every timeout, and
// checks that Partial is at every timeout exactly what arrived of the
// current line. It returns the lines and Partial at io.EOF.
func readAll(t *testing.T, lr *LineReader, in string) (lines []string, rest string) {
	t.Helper()
	start := 0 // offset in in of the current line
	for range 10 * (len(in) + 1) {
		line, err := lr.Next()
		switch {
		case err == nil:
			eol := "\n"
			if strings.HasPrefix(in[start+len(line):], "\r\n") {
				eol = "\r\n"
			}
			if !strings.HasPrefix(in[start:], line+eol) {
				t.Fatalf("line %d: Next returned %q, not the input at offset %d: %q", len(lines)+1, line, start, in[start:])
			}
			if p := lr.Partial(); p != "" {
				t.Fatalf("line %d: Partial after a line = %q, want empty", len(lines)+1, p)
			}
			start += len(line) + len(eol)
			lines = append(lines, line)
		case errors.Is(err, timeout):
			if p := lr.Partial(); !strings.HasPrefix(in[start:], p) {
				t.Fatalf("after line %d: Partial at a timeout = %q, not the input at offset %d: %q", len(lines), p, start, in[start:])
			}
		case err == io.EOF:
			return lines, lr.Partial()
		default:
			t.Fatalf("Next: %v", err)
		}
	}
	t.Fatalf("Next never returned io.EOF; lines so far: %q", lines)
	return nil, ""
}

func TestNext(t *testing.T) {
	readers := []struct {
		name string
		r    func(in string) io.Reader
	}{
		{"whole", func(in string) io.Reader { return strings.NewReader(in) }},
		{"byte by byte", func(in string) io.Reader { return iotest.OneByteReader(strings.NewReader(in)) }},
		{"timeout before every byte", func(in string) io.Reader { return &flaky{in: []byte(in), sep: true} }},
		{"timeout with every byte", func(in string) io.Reader { return &flaky{in: []byte(in)} }},
	}
	for _, c := range lineCases {
		// 16, bufio's smallest buffer, is shorter than the long lines.
		for _, size := range []int{16, 4096} {
			for _, rd := range readers {
				lr := NewLineReader(bufio.NewReaderSize(rd.r(c.in), size))
				lines, rest := readAll(t, lr, c.in)
				if strings.Join(lines, "|") != strings.Join(c.want, "|") || len(lines) != len(c.want) || rest != c.rest {
					t.Errorf("%s, buffer %d, %s:\n got %q rest %q\nwant %q rest %q", c.name, size, rd.name, lines, rest, c.want, c.rest)
				}
			}
		}
	}
}

// A connection's read deadline in the middle of a line and in the middle
// of a literal loses nothing: the next call resumes where Next stopped.
func TestNextResumesAfterDeadline(t *testing.T) {
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	lr := NewLineReader(bufio.NewReader(client))

	// step writes s and, once the reader has taken all of it, ends the
	// reader's wait with a deadline in the past: Next must return lines,
	// then stop at the deadline with partial unfinished.
	step := func(s string, partial string, lines ...string) {
		t.Helper()
		client.SetReadDeadline(time.Time{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			server.Write([]byte(s))
			client.SetReadDeadline(time.Now())
		}()
		defer func() { <-done }()
		for _, want := range lines {
			if got, err := lr.Next(); err != nil || got != want {
				t.Fatalf("Next = %q, %v; want %q", got, err, want)
			}
		}
		if _, err := lr.Next(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Next: err = %v, want a deadline error", err)
		}
		if got := lr.Partial(); got != partial {
			t.Fatalf("Partial = %q, want %q", got, partial)
		}
	}

	step("* 1 EXI", "* 1 EXI")
	step("STS\r\n* 2 FETCH (BODY[] {8}\r\nab", "* 2 FETCH (BODY[] {8}\r\nab", "* 1 EXISTS")
	step("{3}\r\n", "* 2 FETCH (BODY[] {8}\r\nab{3}\r\n")
	step("c", "* 2 FETCH (BODY[] {8}\r\nab{3}\r\nc")
	step(" UID 2)\r\n* 3 FETCH (BODY[] {2}\r\n", "* 3 FETCH (BODY[] {2}\r\n", "* 2 FETCH (BODY[] {8}\r\nab{3}\r\nc UID 2)")
	step("xy", "* 3 FETCH (BODY[] {2}\r\nxy")
	step(")\r\n", "", "* 3 FETCH (BODY[] {2}\r\nxy)")
}

// A literal and a line larger than what LineReader keeps between lines.
func TestNextLarge(t *testing.T) {
	lit := strings.Repeat("a\r\n{1}\r\n", maxKeep/4)
	first := "* 1 FETCH (BODY[] {" + strconv.Itoa(len(lit)) + "}\r\n" + lit + " UID 1)"
	in := first + "\r\n* 2 EXISTS\r\n"
	lr := NewLineReader(bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(in)), 512))
	if got, err := lr.Next(); err != nil || got != first {
		t.Fatalf("Next = %d bytes, %v; want %d bytes", len(got), err, len(first))
	}
	if cap(lr.partial) > maxKeep {
		t.Errorf("LineReader keeps %d bytes after a long line", cap(lr.partial))
	}
	if got, err := lr.Next(); err != nil || got != "* 2 EXISTS" {
		t.Fatalf("Next = %q, %v", got, err)
	}
}

// A literal size that does not fit in an int ends the stream for good.
func TestNextBadLiteralSize(t *testing.T) {
	lr := NewLineReader(bufio.NewReader(strings.NewReader("* 1 FETCH (BODY[] {99999999999999999999999}\r\nab)\r\n* 2 EXISTS\r\n")))
	_, err := lr.Next()
	if err == nil || !strings.Contains(err.Error(), "literal size") {
		t.Fatalf("Next: err = %v, want a literal size error", err)
	}
	if _, err2 := lr.Next(); err2 != err {
		t.Fatalf("second Next: err = %v, want %v again", err2, err)
	}
}
