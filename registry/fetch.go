// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"errors"
	"runtime/debug"
	"time"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// This file holds the module's FETCH of the new messages the store
// announced (EXISTS) in a session's selected mailbox: when it is due, and
// its retries while the store's transaction has not committed yet.

// commitWait bounds how long the FETCH of messages the store announced to
// an idling client waits for the store's commit (committed) before it is
// tried anyway (a change whose event comes late, or never).
const commitWait = 2 * time.Millisecond

// maxFetchTries bounds the retries for a new message that the store
// announced but cannot read yet (its transaction still open): 5 ms doubling,
// about 2.5 s in all.
const maxFetchTries = 9

// fetchDueLocked makes the FETCH of new messages due, announced at at. It
// is called with s.mu held.
func (s *Session) fetchDueLocked(at time.Time) {
	if s.gone {
		return
	}
	if !s.fetchDue || (!at.IsZero() && at.Before(s.fetchDueAt)) {
		s.fetchDueAt = at
	}
	s.fetchDue = true
	s.kickLocked()
}

// NewMessages records that the store announced new messages (EXISTS) in the
// selected mailbox. It only marks the FETCH due: it is called from inside
// the store's update callback, where the mailbox must not be read.
//
// To an idling client go-imap-sql announces an APPEND's message from inside
// the APPEND's transaction, so a FETCH tried at once finds it unreadable:
// the read is wasted, and it competes with the APPEND's commit (and with
// the acting client's tagged OK) for the CPU and the database. Unless a
// commit in the mailbox came that no FETCH has served yet, the FETCH then
// waits for the commit (the hooks publish the change once the store call
// returned), at most commitWait. Outside IDLE (the mailbox's Poll, after
// the command) the store has committed: the FETCH is due at once.
func (s *Session) NewMessages() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.idling || s.gone || s.commits != s.commitsFetched {
		s.fetchDueLocked(now)
		return
	}
	if s.retryAt.IsZero() {
		s.retryAt = now
	}
	if !s.awaitCommit && s.fetchTries == 0 {
		// With fetchTries set a retry is armed already, and committed
		// makes it due.
		s.awaitCommit = true
		if s.retry == nil {
			s.retry = time.AfterFunc(commitWait, s.retryFetch)
		} else {
			s.retry.Reset(commitWait)
		}
	}
}

// committed records that the store committed new messages in mailbox (the
// MessageAppend or MessageNew event of the change). go-imap-sql announces a
// new message (EXISTS) before its transaction commits, so the FETCH that
// follows the announcement may have found it unreadable and be waiting for
// its retry: it is retried now. It is called with Registry.mu held.
func (s *Session) committed(mailbox string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !mapping.SameMailbox(s.selected, mailbox) {
		return
	}
	s.commits++
	waiting := s.fetchTries > 0 || s.awaitCommit
	at := s.retryAt
	if s.awaitCommit {
		// The FETCH goes now; the fallback is not needed.
		s.awaitCommit = false
		s.retryAt = time.Time{}
		s.retry.Stop()
	}
	if waiting {
		s.fetchDueLocked(at)
	}
}

// retryFetch runs when the FETCH retry's timer fires (in the timer's
// goroutine): it makes the retry due for the writer or the next Flush.
func (s *Session) retryFetch() {
	defer func() {
		if p := recover(); p != nil {
			s.reg.log.Printf("panic in FETCH retry: %v\n%s", p, debug.Stack())
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.retryAt
	s.retryAt = time.Time{}
	s.awaitCommit = false
	s.fetchDueLocked(at)
}

// fetchNew sends the FETCH lines of new messages and schedules a retry when
// an announced message is not readable yet. It reports false when the
// connection is gone.
func (s *Session) fetchNew(f Fetcher, items mapping.FetchItems, at time.Time) bool {
	s.mu.Lock()
	giveUp := s.fetchTries >= maxFetchTries
	commits := s.commits
	s.mu.Unlock()
	n := 0
	complete, err := f.FetchNew(items, func(lines [][]byte) error {
		if err := s.out.Write(lines); err != nil {
			return err
		}
		s.lastWrite.Store(time.Now().UnixNano())
		n += len(lines)
		return nil
	}, giveUp)
	if n > 0 {
		s.reg.metrics.Pushed("FETCH", n)
		if !at.IsZero() {
			s.reg.metrics.Latency("FETCH", time.Since(at).Seconds())
		}
	}
	if errors.Is(err, ErrClosed) {
		s.reg.Unregister(s)
		return false
	}
	if err != nil {
		s.reg.log.Error("cannot read new messages for FETCH", err, "account", s.account)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if complete {
		s.commitsFetched = commits
	}
	if complete || giveUp {
		if giveUp && !complete {
			s.reg.log.Msg("new message announced by the store never became readable; no FETCH for it", "account", s.account)
		}
		s.fetchTries = 0
		return true
	}
	delay := 5 * time.Millisecond << s.fetchTries
	s.fetchTries++
	if s.commits != commits {
		// The store committed while this FETCH read: try again now.
		delay = 0
	}
	if s.retryAt.IsZero() || (!at.IsZero() && at.Before(s.retryAt)) {
		s.retryAt = at
	}
	if s.gone {
		return true
	}
	if s.retry == nil {
		s.retry = time.AfterFunc(delay, s.retryFetch)
	} else {
		s.retry.Reset(delay)
	}
	return true
}
