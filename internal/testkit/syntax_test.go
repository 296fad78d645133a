// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// recordTB records Errorf and Logf instead of reporting them.
type recordTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	logs   []string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recordTB) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func TestLineSourceOf(t *testing.T) {
	for line, want := range map[string]LineSource{
		`* 3 FETCH (UID 9 FLAGS () BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 1 1))`: SourceModule,
		`* STATUS "Archive" (MESSAGES 1)`:                                                  SourceModule,
		`* LIST () "/" "x"`:                                                                SourceModule,
		`* 3 EXISTS`:                                                                       SourceStore,
		`* 3 RECENT`:                                                                       SourceStore,
		`* 3 EXPUNGE`:                                                                      SourceStore,
		`* 3 FETCH (FLAGS (\Seen) UID 9)`:                                                  SourceStore,
		`* OK [UIDNEXT 4] x`:                                                               SourceOther,
		`* 3 FETCH (BODYSTRUCTURE (...))`:                                                  SourceOther,
	} {
		if got := LineSourceOf(line); got != want {
			t.Errorf("LineSourceOf(%q) = %v, want %v", line, got, want)
		}
	}
}

// TestCheckModuleLine: a module line that is not RFC 3501 syntax fails the
// test with the line; the store's is logged, naming the store.
func TestCheckModuleLine(t *testing.T) {
	tests := []struct {
		line       string
		plain      bool
		wantError  string
		wantLogged string
	}{
		{`* 1 FETCH (UID 1 FLAGS () BODYSTRUCTURE ("text" "plain" () NIL NIL NIL 11 1))`, false, "body-fld-param", ""},
		{`* LIST () "/" "New" ("OLDNAME" ("Old"))`, false, "", ""},
		{`* LIST () "/" "New" ("OLDNAME" ("Old"))`, true, "RFC 3501 LIST has no extended data", ""},
		{`* STATUS "Entwürfe" (MESSAGES 1)`, false, "QUOTED-CHAR", ""},
		{`* 1 FETCH (FLAGS ( \Recent) UID 1)`, false, "", "the store (go-imap-sql)"},
		{`* 1 FETCH (FLAGS (\Seen) UID 1)`, false, "", ""},
		{`* 1 EXISTS`, false, "", ""},
		{`+ idling`, false, "", ""},
	}
	for _, tt := range tests {
		r := &recordTB{TB: t}
		if tt.plain {
			CheckPlainModuleLine(r, tt.line)
		} else {
			CheckModuleLine(r, tt.line)
		}
		if tt.wantError == "" && len(r.errors) > 0 || tt.wantError != "" && (len(r.errors) != 1 || !strings.Contains(r.errors[0], tt.wantError) || !strings.Contains(r.errors[0], fmt.Sprintf("%q", tt.line))) {
			t.Errorf("%q: errors %q, want one with %q and the line", tt.line, r.errors, tt.wantError)
		}
		if tt.wantLogged == "" && len(r.logs) > 0 || tt.wantLogged != "" && (len(r.logs) != 1 || !strings.Contains(r.logs[0], tt.wantLogged)) {
			t.Errorf("%q: logs %q, want %q", tt.line, r.logs, tt.wantLogged)
		}
	}
}

// TestRawConnChecksLines: RawConn checks the lines it reads as they
// arrive, during IDLE and in a command's untagged lines, but not a
// command's own answer; of the store's faulty lines it logs the first.
func TestRawConnChecksLines(t *testing.T) {
	bad := `* STATUS "a" (MESSAGES 1 SIZE 2)`
	storeBad := `* 1 FETCH (FLAGS ( \Recent) UID 1)`
	addr := fakeServer(t,
		step{send: "* OK fake\r\n"},
		step{want: []string{`T1 STATUS "a" (MESSAGES SIZE)`}, send: bad + "\r\nT1 OK done\r\n"},
		step{want: []string{"T2 NOOP"}, send: bad + "\r\n" + storeBad + "\r\n" + storeBad + "\r\nT2 OK done\r\n"},
		step{want: []string{"T3 IDLE"}, send: "+ idling\r\n" + `* 2 FETCH (UID 2 FLAGS (a"b))` + "\r\n"},
	)
	r := &recordTB{TB: t}
	c := DialRaw(r, addr)
	c.Cmd(`STATUS "a" (MESSAGES SIZE)`)
	if len(r.errors) != 0 {
		t.Fatalf("STATUS's own answer was checked: %q", r.errors)
	}
	c.Cmd("NOOP")
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "status-att") {
		t.Fatalf("after NOOP: errors %q, want one for the STATUS line", r.errors)
	}
	if len(r.logs) != 1 || !strings.Contains(r.logs[0], "the store") {
		t.Fatalf("after NOOP: logs %q, want one for the first of the store's two lines", r.logs)
	}
	c.Idle()
	c.Expect(t, ExpectTimeout, `* 2 FETCH (UID 2 FLAGS (a"b))`)
	if len(r.errors) != 2 || !strings.Contains(r.errors[1], `FETCH (UID 2`) {
		t.Fatalf("during IDLE: errors %q, want a second one for the FETCH line", r.errors)
	}
}

// TestRawConnPlainUntilNotify: a connection that has not sent NOTIFY SET
// is held to the plain grammar (a LIST with OLDNAME fails), one that has
// to the full grammar (the same line passes).
func TestRawConnPlainUntilNotify(t *testing.T) {
	renamed := `* LIST (\HasNoChildren) "/" "B" ("OLDNAME" ("A"))`
	addr := fakeServer(t,
		step{send: "* OK fake\r\n"},
		step{want: []string{"T1 NOOP"}, send: renamed + "\r\nT1 OK done\r\n"},
		step{want: []string{"T2 NOTIFY SET (personal (MailboxName))"}, send: "T2 OK done\r\n"},
		step{want: []string{"T3 NOOP"}, send: renamed + "\r\nT3 OK done\r\n"},
	)
	r := &recordTB{TB: t}
	c := DialRaw(r, addr)
	if c.Notify() {
		t.Fatal("Notify before NOTIFY SET")
	}
	c.Cmd("NOOP")
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "no extended data") {
		t.Fatalf("plain session: errors %q, want one for the OLDNAME line", r.errors)
	}
	c.Cmd("NOTIFY SET (personal (MailboxName))")
	if !c.Notify() {
		t.Fatal("not Notify after NOTIFY SET")
	}
	c.Cmd("NOOP")
	if len(r.errors) != 1 {
		t.Fatalf("NOTIFY session: errors %q, want the OLDNAME line accepted", r.errors)
	}
}
