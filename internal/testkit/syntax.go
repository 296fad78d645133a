// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"regexp"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
)

// LineSource says who, in a maddy with storage.notify, writes an untagged
// line a session receives.
type LineSource int

const (
	// SourceOther: not a line a push writes — the greeting, a command's
	// own data (CAPABILITY, SELECT's FLAGS and OK codes, BYE), or a
	// continuation request.
	SourceOther LineSource = iota
	// SourceModule: a line storage.notify writes: "* n FETCH (UID ..."
	// (a new message), "* STATUS ...", "* LIST ...".
	SourceModule
	// SourceStore: a line the inner store writes (go-imap-sql through
	// go-imap-mess, stock maddy behaviour): "* n EXISTS", "* n RECENT",
	// "* n EXPUNGE", "* n FETCH (FLAGS ...".
	SourceStore
)

func (s LineSource) String() string {
	switch s {
	case SourceModule:
		return "storage.notify"
	case SourceStore:
		return "the store (go-imap-sql)"
	}
	return "other"
}

var (
	moduleLineRe = regexp.MustCompile(`^\* (\d+ FETCH \(UID |STATUS |LIST )`)
	storeLineRe  = regexp.MustCompile(`^\* \d+ (EXISTS|RECENT|EXPUNGE|FETCH \(FLAGS )`)
)

// LineSourceOf tells who writes line (as RawConn returns it, without CRLF),
// by its form alone: it cannot tell a pushed STATUS or LIST from the answer
// to a STATUS or LIST command, or a pushed FETCH (UID ...) from the answer
// to a FETCH that asked for UID first; RawConn leaves a command's own
// answers out of its check.
func LineSourceOf(line string) LineSource {
	switch {
	case moduleLineRe.MatchString(line):
		return SourceModule
	case storeLineRe.MatchString(line):
		return SourceStore
	}
	return SourceOther
}

// CheckModuleLine checks one untagged line read from a maddy (without its
// CRLF, literals inline, as RawConn returns lines) against RFC 3501's
// formal syntax (internal/imapsyntax, full grammar: LIST may carry
// RFC 5258/5465 extended data). A line storage.notify writes
// (SourceModule) that fails fails the test with the line and the error.
// A line of the store or any other line that fails is only logged, as the
// store's: go-imap-sql writes keywords that are not atoms in its
// FETCH (FLAGS ...) (docs/guarantees.md, stock behaviour), which is not
// the module's to fix. It may be called from any test goroutine.
func CheckModuleLine(t testing.TB, line string) {
	t.Helper()
	checkLine(t, line, false)
}

// CheckPlainModuleLine is CheckModuleLine with RFC 3501's LIST grammar
// only: for lines a client that negotiated neither LIST-EXTENDED nor
// NOTIFY receives, where extended data such as OLDNAME is an error.
func CheckPlainModuleLine(t testing.TB, line string) {
	t.Helper()
	checkLine(t, line, true)
}

func checkLine(t testing.TB, line string, plain bool) {
	t.Helper()
	if src, err := lineError(line, plain); err != nil {
		reportLine(t, src, line, err)
	}
}

// lineError checks line (without CRLF) and returns who writes it and the
// syntax error, if any. Continuation requests are not checked.
func lineError(line string, plain bool) (LineSource, error) {
	src := LineSourceOf(line)
	if strings.HasPrefix(line, "+") {
		return src, nil
	}
	return src, imapsyntax.Check([]byte(line+"\r\n"), imapsyntax.Options{Plain: plain})
}

// reportLine fails t for a module line and logs any other.
func reportLine(t testing.TB, src LineSource, line string, err error) {
	t.Helper()
	if src == SourceModule {
		t.Errorf("testkit: a line storage.notify wrote is not RFC 3501 syntax: %v\n line: %q", err, line)
	} else {
		t.Logf("testkit: a line of %v is not RFC 3501 syntax (not the module's): %v", src, err)
	}
}

var fetchLineRe = regexp.MustCompile(`^\* \d+ FETCH `)

// isAnswer reports whether the untagged line is, by its form, the answer of
// the running command cmd (e.g. "STATUS box (MESSAGES)") rather than a
// push: a STATUS line during STATUS, a LIST or LSUB line during LIST or
// LSUB, a FETCH line during FETCH, STORE and their UID forms. These are
// written by maddy's IMAP stack (go-imap v1), not by storage.notify.
func isAnswer(cmd, line string) bool {
	f := strings.Fields(strings.ToUpper(cmd))
	if len(f) > 1 && f[0] == "UID" {
		f = f[1:]
	}
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "STATUS", "LIST", "LSUB":
		return strings.HasPrefix(line, "* "+f[0]+" ")
	case "FETCH", "STORE":
		return fetchLineRe.MatchString(line)
	}
	return false
}
