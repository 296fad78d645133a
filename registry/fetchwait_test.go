// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/event"
)

// countLine counts the lines of got that are line.
func countLine(got []string, line string) int {
	n := 0
	for _, l := range got {
		if l == line {
			n++
		}
	}
	return n
}

// To an idling client the store announces an APPEND's message from inside
// its transaction: the FETCH waits for the commit (the change's event) and
// is not tried before it, unless commitWait passes first. Outside IDLE (the
// mailbox's Poll) it is queued at once.
func TestIdleFetchWaitsForCommit(t *testing.T) {
	st := newTestStore(t, "alice")
	r, _ := newRegistry(t, st.opener())
	out := newOut()
	s := r.Register("alice", 1, out)
	f := &fakeFetcher{}
	s.Select("INBOX", f)
	s.SetIdle(true)
	waitQuiet(t, r, s)
	out.Take()

	const one = "* 1 FETCH (UID 1 FLAGS ())\r\n"
	f.announce(one)
	t0 := time.Now()
	s.NewMessages()
	s.mu.Lock()
	waiting, queued := s.awaitCommit, s.fetchDue
	s.mu.Unlock()
	calls := f.Calls()
	if time.Since(t0) < commitWait && (!waiting || queued || calls != 0) {
		t.Errorf("before the commit: awaitCommit %v, FETCH due %v, FetchNew called %d times; want true, false, 0", waiting, queued, calls)
	}
	r.Publish(msgEvent(event.MessageAppend, "alice", "INBOX", 2))
	waitFor(t, "the FETCH after the commit", func() bool { return countLine(out.Take(), one) == 1 })

	// No event comes (another instance's change whose event is late): the
	// FETCH is tried once commitWait has passed.
	const two = "* 2 FETCH (UID 2 FLAGS ())\r\n"
	f.announce(two)
	s.NewMessages()
	waitFor(t, "the FETCH without an event", func() bool { return countLine(out.Take(), two) == 1 })

	// A commit that no FETCH served yet came before the announcement: the
	// FETCH is queued at once.
	waitQuiet(t, r, s)
	r.Publish(msgEvent(event.MessageAppend, "alice", "INBOX", 2))
	s.mu.Lock()
	commits, fetched := s.commits, s.commitsFetched
	s.mu.Unlock()
	if commits == fetched {
		t.Fatalf("commits %d, commitsFetched %d after the event: want them to differ", commits, fetched)
	}
	const three = "* 3 FETCH (UID 3 FLAGS ())\r\n"
	f.announce(three)
	s.NewMessages()
	s.mu.Lock()
	waiting = s.awaitCommit
	s.mu.Unlock()
	if waiting {
		t.Errorf("announcement after a commit no FETCH served: the FETCH waits for another commit")
	}
	waitFor(t, "the FETCH of the committed message", func() bool { return countLine(out.Take(), three) == 1 })

	// Outside IDLE (Poll): queued at once, written by the Flush.
	waitQuiet(t, r, s)
	s.SetIdle(false)
	const four = "* 4 FETCH (UID 4 FLAGS ())\r\n"
	f.announce(four)
	s.NewMessages()
	s.Flush()
	if got := out.Take(); countLine(got, four) != 1 {
		t.Errorf("Flush after an announcement outside IDLE wrote %q, want the FETCH line once", got)
	}
}
