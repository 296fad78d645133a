// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// The module's FETCH of new messages numbers them as the session was told,
// also when the store's database has a message the session has not been
// told of between two that it has. That is the state of a session under
// concurrent writers on PostgreSQL: go-imap-sql announces a COPY or MOVE
// after its transaction commits, so a later APPEND can be announced (and
// synced to the session) first; another maddy instance's messages arrive
// later still. Here a second store on the same database adds UID 2 unseen
// by the session, between UIDs 1 and 3, which it is told of; then the
// store's own FETCH FLAGS tells it that message 2 is UID 3. The module
// used to read the new messages by sequence number (1:2, which go-imap-sql
// resolves to UIDs 1:3, reading UID 2 as well and numbering it 2) and
// wrote `* 2 FETCH (UID 2 ...)`, contradicting the store's line before it.
func TestNewMessagesNumberedAsTheSessionWasTold(t *testing.T) {
	w := newWorld(t)
	c := newFakeConn(t)
	_, mb, err := w.login().GetMailbox("INBOX", false, c)
	if err != nil {
		t.Fatal(err)
	}
	m := mb.(*Mailbox)
	t.Cleanup(func() { m.Close() })
	waitFor(t, "the session to register", func() bool { return w.reg.Sessions() > 0 })

	writer := w.login()
	appendTo(t, writer, "INBOX") // UID 1
	other := testkit.SQLiteStoreAt(t, w.dir)
	ou, err := other.GetUser(acct)
	if err != nil {
		t.Fatal(err)
	}
	if err := testkit.RetryLocked(5, func() error {
		return ou.CreateMessage("INBOX", nil, time.Now(), bytes.NewBufferString("Subject: other\r\n\r\nbody\r\n"), nil)
	}); err != nil {
		t.Fatal(err) // UID 2, of which this store's sessions are not told
	}
	appendTo(t, writer, "INBOX") // UID 3

	// The store's updates, without the module's lines (which wait for a
	// Poll or IDLE, as between a command and its tagged response).
	if err := m.inner.Poll(true); err != nil {
		t.Fatal(err)
	}
	_, flagger, err := writer.GetMailbox("INBOX", false, newFakeConn(t))
	if err != nil {
		t.Fatal(err)
	}
	defer flagger.Close()
	var three imap.SeqSet
	three.AddNum(3)
	if err := testkit.RetryLocked(5, func() error {
		return flagger.UpdateMessagesFlags(true, &three, imap.AddFlags, false, []string{imap.FlaggedFlag})
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.inner.Poll(true); err != nil {
		t.Fatal(err)
	}
	if err := m.Poll(true); err != nil {
		t.Fatal(err)
	}
	expect(t, c,
		"* 2 EXISTS",
		"* 2 RECENT",
		`* 2 FETCH (FLAGS [\Flagged \Recent] UID 3)`,
		`* 1 FETCH (UID 1 FLAGS (\Recent) BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 6 1 NIL NIL NIL NIL))`,
		`* 2 FETCH (UID 3 FLAGS (\Flagged \Recent) BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 6 1 NIL NIL NIL NIL))`,
	)
}

// number writes a line for a new message only where the store's number for
// it agrees with the session's numbering, in order, and skips the others
// only at giveUp.
func TestNumberFollowsTheSessionsNumbering(t *testing.T) {
	msg := func(seq, uid uint32) *imap.Message {
		m := imap.NewMessage(seq, []imap.FetchItem{imap.FetchUid})
		m.Uid = uid
		return m
	}
	for _, tc := range []struct {
		name         string
		tail         []uint32 // messages 3.. (head 2, floor 10)
		msgs         []*imap.Message
		giveUp       bool
		want         string
		complete     bool
		head, floor  uint32
		tailAfterLen int
	}{
		{"in order", []uint32{0, 0, 15}, []*imap.Message{msg(3, 11), msg(4, 12), msg(5, 15)}, false,
			"* 3 FETCH (UID 11)|* 4 FETCH (UID 12)|* 5 FETCH (UID 15)", true, 5, 15, 0},
		{"a message the session was not told of between two", []uint32{0, 0}, []*imap.Message{msg(3, 11), msg(4, 12), msg(4, 13)}, false,
			"* 3 FETCH (UID 11)|* 4 FETCH (UID 13)", true, 4, 13, 0},
		{"the store told another UID", []uint32{13, 0}, []*imap.Message{msg(3, 12), msg(4, 14)}, false,
			"", false, 2, 10, 2},
		{"the store told another UID, giving up", []uint32{13, 0}, []*imap.Message{msg(3, 12), msg(4, 14)}, true,
			"* 4 FETCH (UID 14)", false, 4, 14, 0},
		{"above a later message's UID", []uint32{0, 12}, []*imap.Message{msg(3, 14), msg(4, 12)}, false,
			"", false, 2, 10, 2},
		{"not above the floor", []uint32{0}, []*imap.Message{msg(3, 9)}, false,
			"", false, 2, 10, 1},
		{"not readable yet", []uint32{0, 0}, []*imap.Message{msg(4, 12)}, false,
			"", false, 2, 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &selected{head: 2, floor: 10, tail: tc.tail}
			var got []string
			complete, err := s.number(tc.msgs, nil, func(lines [][]byte) error {
				for _, l := range lines {
					got = append(got, strings.TrimSuffix(string(l), "\r\n"))
				}
				return nil
			}, tc.giveUp)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != tc.want || complete != tc.complete || s.head != tc.head || s.floor != tc.floor || len(s.tail) != tc.tailAfterLen {
				t.Errorf("got %q complete=%v head=%d floor=%d tail=%v, want %q complete=%v head=%d floor=%d and %d in tail",
					got, complete, s.head, s.floor, s.tail, tc.want, tc.complete, tc.head, tc.floor, tc.tailAfterLen)
			}
		})
	}
}

// The session's view follows the store's updates: EXISTS adds messages
// without UIDs, EXPUNGE removes the one numbered, a FETCH with a UID gives
// it to that number and takes it from any other.
func TestSelectedFollowsTheStoresUpdates(t *testing.T) {
	s := &selected{}
	s.selectedAt(&imap.MailboxStatus{Messages: 2, UidNext: 8})
	if !s.exist(5) || s.exist(5) {
		t.Fatal("EXISTS 5 after 2 announces messages once")
	}
	s.told(4, 9)
	s.told(5, 9) // told last: 9 is message 5
	s.told(1, 20)
	s.expunge(3)
	if s.head != 2 || s.floor != 20 || !slices.Equal(s.tail, []uint32{0, 9}) || s.exists() != 4 {
		t.Fatalf("head=%d floor=%d tail=%v, want head 2, floor 20, tail [0 9]", s.head, s.floor, s.tail)
	}
	s.expunge(1)
	if s.head != 1 || s.exists() != 3 {
		t.Fatalf("after EXPUNGE 1: head=%d exists=%d", s.head, s.exists())
	}
}
