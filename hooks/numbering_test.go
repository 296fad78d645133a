// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"bytes"
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
		`* 1 FETCH (UID 1 FLAGS (\Recent) BODYSTRUCTURE ("text" "plain" () NIL NIL NIL 6 1 NIL NIL NIL NIL))`,
		`* 2 FETCH (UID 3 FLAGS (\Flagged \Recent) BODYSTRUCTURE ("text" "plain" () NIL NIL NIL 6 1 NIL NIL NIL NIL))`,
	)
}
