// SPDX-License-Identifier: GPL-3.0-or-later

// Package imapwire owns the reading of raw IMAP server responses off the
// wire: LineReader splits the byte stream into response lines, each with
// the literals it announces ("{n}" or "{n+}" at the end of a line, then n
// bytes, then the rest of the line) kept verbatim as part of it. It does
// not parse or check what a line says (internal/imapsyntax does).
//
// The test kit's raw connection (internal/testkit) and the benchmark's
// clients (cmd/notify-bench) read with it. It imports only the standard
// library.
package imapwire

import (
	"bufio"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// LineReader reads IMAP server responses one line at a time from a
// bufio.Reader. A LineReader is not safe for concurrent use: one goroutine
// at a time calls Next and Partial, and nothing else reads the
// bufio.Reader while the LineReader is in use.
type LineReader struct {
	r        *bufio.Reader
	partial  []byte // bytes of the line being read, kept across errors
	segStart int    // offset in partial after the last literal's bytes
	litLeft  int    // bytes of the current literal still to read
	err      error  // a protocol error that ends the stream
}

// maxKeep is the largest line buffer LineReader keeps for the next line;
// a larger one (after a long line) is released.
const maxKeep = 64 << 10

// NewLineReader returns a LineReader that reads from r. Its longest line is
// unbounded: a line longer than r's buffer is gathered piece by piece.
func NewLineReader(r *bufio.Reader) *LineReader {
	return &LineReader{r: r}
}

// Next returns the next response line without its line ending (CRLF, or a
// bare LF). A line that announces a literal at its end ("{n}" or the
// non-synchronizing "{n+}") is returned with the announcement's line
// ending, the literal's n bytes and the rest of the line appended verbatim,
// as one string; a line may announce any number of literals. Only text
// outside literals can announce one: "{3}\r\n" inside a literal's bytes is
// data.
//
// When the underlying reader fails, Next returns its error and keeps what
// it read of the incomplete line (Partial shows it): the next call resumes
// exactly where this one stopped, so an error that leaves the stream intact,
// such as a connection's read deadline (os.ErrDeadlineExceeded), loses
// nothing, whether it struck in the middle of a line or of a literal. A
// literal size that does not fit in an int is a protocol error after which
// the stream cannot be split into lines: Next returns that error from then
// on.
//
// Next is called by the goroutine that owns the reading side of the
// connection, never by two goroutines at once.
func (lr *LineReader) Next() (string, error) {
	if lr.err != nil {
		return "", lr.err
	}
	for {
		if lr.litLeft > 0 {
			// Read the literal into partial, at most a buffer's worth of
			// room at a time so that a huge announced size allocates only
			// as the bytes arrive.
			lr.partial = slices.Grow(lr.partial, min(lr.litLeft, max(lr.r.Size(), 4096)))
			end := len(lr.partial)
			n, err := lr.r.Read(lr.partial[end:min(cap(lr.partial), end+lr.litLeft)])
			lr.partial = lr.partial[:end+n]
			lr.litLeft -= n
			if lr.litLeft == 0 {
				lr.segStart = len(lr.partial)
			}
			if err != nil {
				return "", err
			}
			continue
		}
		chunk, err := lr.r.ReadSlice('\n')
		lr.partial = append(lr.partial, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		n, ok, err := literalSize(lr.partial[lr.segStart:])
		if err != nil {
			lr.err = fmt.Errorf("imapwire: literal size in %q: %w", lr.partial, err)
			return "", lr.err
		}
		if ok {
			lr.litLeft = n
			lr.segStart = len(lr.partial)
			continue
		}
		// The line ending is the segment's: a literal's last CR is data.
		end := len(lr.partial) - 1
		if end > lr.segStart && lr.partial[end-1] == '\r' {
			end--
		}
		line := string(lr.partial[:end])
		lr.partial, lr.segStart = lr.partial[:0], 0
		if cap(lr.partial) > maxKeep {
			lr.partial = nil
		}
		return line, nil
	}
}

// Partial returns the bytes of the line Next has begun but not finished
// (after Next returned an error), or "" between lines. The same rules as
// for Next apply to who may call it.
func (lr *LineReader) Partial() string {
	return string(lr.partial)
}

// literalSize reports whether seg, text outside literals that ends in a
// line ending, ends by announcing a literal ("{n}" or "{n+}" before the
// line ending), and its size n. It fails if the digits do not fit in an int.
func literalSize(seg []byte) (n int, ok bool, err error) {
	s := trimEOL(seg)
	if len(s) < 3 || s[len(s)-1] != '}' {
		return 0, false, nil
	}
	s = s[:len(s)-1]
	if s[len(s)-1] == '+' {
		s = s[:len(s)-1]
	}
	i := len(s)
	for i > 0 && '0' <= s[i-1] && s[i-1] <= '9' {
		i--
	}
	if i == len(s) || i == 0 || s[i-1] != '{' {
		return 0, false, nil
	}
	n, err = strconv.Atoi(string(s[i:]))
	if err != nil {
		return 0, false, err
	}
	return n, true, nil
}

// trimEOL returns b without its final "\n" or "\r\n".
func trimEOL(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
		if len(b) > 0 && b[len(b)-1] == '\r' {
			b = b[:len(b)-1]
		}
	}
	return b
}
