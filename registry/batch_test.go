// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// TestBatchReconcile: with a BatchStatus, learning an account and
// reconciling it read every mailbox with one batch each, no Status query
// per mailbox, and tell the sessions exactly what per-mailbox queries tell
// (TestReconcile).
func TestBatchReconcile(t *testing.T) {
	line := func(mbox string, msgs int) string {
		return string(mapping.StatusLine(mbox, mapping.AnyTimePolicy().StatusItems,
			mapping.Status{Messages: uint32(msgs), UIDNext: uint32(msgs + 1), Unseen: uint32(msgs)}))
	}
	st := newTestStore(t, "alice")
	var boxes []string
	for i := 0; i < 12; i++ {
		boxes = append(boxes, fmt.Sprintf("Box%02d", i))
	}
	st.createMailboxes("alice", append(boxes, "Sent")...)
	st.appendMsg("alice", "Box03")
	var batches atomic.Int64
	batch := func(u backend.User, items []imap.StatusItem) (map[string]*imap.MailboxStatus, error) {
		batches.Add(1)
		inner := u.(*countingUser).User // not counted as Status queries
		infos, err := inner.ListMailboxes(false)
		if err != nil {
			return nil, err
		}
		out := map[string]*imap.MailboxStatus{}
		for _, info := range infos {
			s, err := inner.Status(info.Name, items)
			if err != nil {
				return nil, err
			}
			out[info.Name] = s
		}
		return out, nil
	}
	logger, logs := testkit.NewLog()
	r := New(mapping.AnyTimePolicy(), st.opener(), logger)
	r.SetBatchStatus(batch)
	defer r.Close()

	sentOut := newOut()
	sent := register(r, "alice", 1, sentOut, "Sent", true)
	waitQuiet(t, r, sent)
	if n := batches.Load(); n != 1 {
		t.Fatalf("learning the account: %d batches, want 1", n)
	}
	st.deliver("alice", "INBOX")
	st.deliver("alice", "Box07")
	st.deliver("alice", "Box07")
	r.Reconcile("alice")
	waitFor(t, "reconciled STATUS", func() bool { return sentOut.Len() >= 2 })
	waitQuiet(t, r, sent)
	sameLineSet(t, "session with Sent selected", sentOut.Take(), []string{line("INBOX", 1), line("Box07", 2)})
	if n := batches.Load(); n != 2 {
		t.Errorf("after the reconciliation: %d batches, want 2", n)
	}
	for _, m := range append(boxes, "INBOX", "Sent") {
		if n := st.stats.Status(m); n != 0 {
			t.Errorf("%d Status queries of %s, want none (the batch reads them)", n, m)
		}
	}
	if n := logs.Count("error"); n != 0 {
		t.Errorf("%d error lines:\n%s", n, logs.String())
	}
}
