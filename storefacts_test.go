// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"testing"

	imapv1 "github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	mess "github.com/foxcpp/go-imap-mess"
)

// recordingConn is a backend.Conn that records the updates sent to it.
type recordingConn struct {
	backend.Conn
	updates []backend.Update
}

func (c *recordingConn) SendUpdate(upd backend.Update) error {
	c.updates = append(c.updates, upd)
	return nil
}

// messMailbox is the part of a go-imap-sql mailbox go-imap-mess uses.
type messMailbox struct {
	backend.Mailbox
	conn backend.Conn
}

func (m messMailbox) Conn() backend.Conn { return m.conn }

// TestStoreFlagUpdateOfExpungedMessage pins a behaviour of the store that
// the soak tests meet (viewModel.storeStaleFlagUpdate) and
// docs/guarantees.md describes: when a flag change of a message reaches
// go-imap-mess after the message's EXPUNGE went to a session — go-imap-sql
// reads the new flags of a STORE in a transaction that can predate another
// session's EXPUNGE — the session gets a FETCH with the expunged message's
// UID and the sequence number of the next message, since go-imap-mess
// numbers a UID by the first UID not below it. Stock maddy sends it the
// same; storage.notify forwards the store's updates unchanged. The test
// fails when go-imap-mess stops doing it, and the soak's allowance for it
// should go then.
func TestStoreFlagUpdateOfExpungedMessage(t *testing.T) {
	conn := &recordingConn{}
	mgr := mess.NewManager()
	handle, err := mgr.Mailbox("INBOX", messMailbox{conn: conn}, []uint32{3, 6, 7, 8}, &imapv1.SeqSet{})
	if err != nil {
		t.Fatal(err)
	}
	var uid6 imapv1.SeqSet
	uid6.AddNum(6)
	handle.RemovedSet(uid6)
	handle.Sync(true)
	handle.FlagsChanged(6, []string{imapv1.DeletedFlag}, false)
	handle.Sync(true)

	if len(conn.updates) != 2 {
		t.Fatalf("go-imap-mess sent %d updates, want the EXPUNGE and a flag update: %#v", len(conn.updates), conn.updates)
	}
	if exp, ok := conn.updates[0].(*backend.ExpungeUpdate); !ok || exp.SeqNum != 2 {
		t.Fatalf("first update %#v, want EXPUNGE of message 2 (UID 6)", conn.updates[0])
	}
	msg, ok := conn.updates[1].(*backend.MessageUpdate)
	if !ok {
		t.Fatalf("second update %#v, want a flag update", conn.updates[1])
	}
	if msg.Message.SeqNum != 2 || msg.Message.Uid != 6 {
		t.Fatalf("the flag update of expunged UID 6 is message %d UID %d; go-imap-mess used to number it 2 (the sequence number of UID 7): the store changed, revisit viewModel.storeStaleFlagUpdate",
			msg.Message.SeqNum, msg.Message.Uid)
	}
	t.Logf("go-imap-mess: after EXPUNGE of message 2 (UID 6), a flag change of UID 6 goes out as message %d UID %d; message 2 is UID 7 now",
		msg.Message.SeqNum, msg.Message.Uid)
}
