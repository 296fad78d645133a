// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	imapsql "github.com/foxcpp/go-imap-sql"
	"github.com/foxcpp/maddy/framework/log"
	_ "github.com/mattn/go-sqlite3" // go-imap-sql's sqlite3 driver
)

// SQLiteStore returns a go-imap-sql store on SQLite in a temporary folder
// of t, with the accounts created, for tests that run the module's
// packages in process against the real store. It is closed when the test
// ends.
func SQLiteStore(t testing.TB, accounts ...string) *imapsql.Backend {
	t.Helper()
	return SQLiteStoreAt(t, t.TempDir(), accounts...)
}

// SQLiteStoreAt is SQLiteStore in the folder dir, which may hold the store
// of an earlier call: a second store there is like a second maddy instance
// on the same database, whose sessions are not told of the other's changes.
func SQLiteStoreAt(t testing.TB, dir string, accounts ...string) *imapsql.Backend {
	t.Helper()
	msgs := filepath.Join(dir, "messages")
	if err := os.MkdirAll(msgs, 0o700); err != nil {
		t.Fatal(err)
	}
	be, err := imapsql.New("sqlite3", filepath.Join(dir, "imapsql.db"), &imapsql.FSStore{Root: msgs}, imapsql.Opts{Log: imapsql.DummyLogger{}})
	if err != nil {
		t.Fatalf("testkit: open go-imap-sql on SQLite: %v", err)
	}
	t.Cleanup(func() { be.Close() })
	for _, acct := range accounts {
		if err := be.CreateUser(acct); err != nil {
			t.Fatalf("testkit: create account %s: %v", acct, err)
		}
	}
	return be
}

// LogCapture keeps the messages written to the maddy logger NewLog
// returns. Its methods may be called from any goroutine.
type LogCapture struct {
	mu sync.Mutex
	ms []string
}

// NewLog returns a maddy logger (named "notify", like the module's) whose
// messages the returned LogCapture keeps.
func NewLog() (log.Logger, *LogCapture) {
	c := &LogCapture{}
	out := log.FuncOutput(func(_ time.Time, _ bool, msg string) {
		c.mu.Lock()
		c.ms = append(c.ms, msg)
		c.mu.Unlock()
	}, func() error { return nil })
	return log.Logger{Out: out, Name: "notify"}, c
}

// Count returns how many messages contain substr.
func (c *LogCapture) Count(substr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, m := range c.ms {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// String returns the messages, one per line.
func (c *LogCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.ms, "\n")
}

// Goroutines counts the goroutines of this test process whose stack
// trace contains any of substrs (a goroutine leak check of the packages
// tested in process).
func Goroutines(substrs ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, s := range substrs {
			if strings.Contains(g, s) {
				count++
				break
			}
		}
	}
	return count
}

// RetryLocked runs op until it does not fail with SQLite's "database is
// locked", at most tries times, pausing 20 ms × the try number in between,
// and returns op's last error. go-imap-sql on SQLite answers that to a
// writer while another connection writes or reads: the store's answer to
// the client, which the module does not hide (docs/guarantees.md), which a
// client repeats and which the tests do not check, so they repeat such a
// write too.
func RetryLocked(tries int, op func() error) error {
	var err error
	for try := 1; try <= tries; try++ {
		if err = op(); err == nil || !strings.Contains(err.Error(), "database is locked") {
			return err
		}
		if try < tries {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		}
	}
	return err
}
