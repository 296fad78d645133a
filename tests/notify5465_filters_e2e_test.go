// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of RFC 5465 NOTIFY's filters, events and refusals.

import (
	"regexp"
	"slices"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// TestNotify5465Filters: each mailbox filter matches the mailboxes
// docs/notify.md says, for STATUS lines of message events in other
// mailboxes; the selected filters give the selected mailbox's EXISTS and
// FETCH.
func TestNotify5465Filters(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	probe := rawLogin(t, srv, user)
	d := delimChar(t, storeDelimiter(t, probe))
	child := "Tree" + d + "Child"
	boxes := []string{"INBOX", "Sub", "Tree", child, "Exact", "Other"}
	for _, m := range boxes[1:] {
		mustOK(t, "CREATE "+m, a.Create(m, nil).Wait())
	}
	// The store subscribes what it creates (and INBOX): only Sub stays.
	for _, m := range boxes {
		if m != "Sub" {
			mustOK(t, "UNSUBSCRIBE "+m, a.Unsubscribe(m).Wait())
		}
	}

	filters := []struct {
		filter string
		want   []string // mailboxes whose STATUS the session is told
	}{
		{"inboxes", boxes},
		{"personal", boxes},
		{"subscribed", []string{"Sub"}},
		{"subtree Tree", []string{"Tree", child}},
		{"subtree (Exact Nope)", []string{"Exact"}},
		{"mailboxes Exact", []string{"Exact"}},
		{`mailboxes (INBOX "Other" Nope)`, []string{"INBOX", "Other"}},
	}
	conns := make([]*testkit.RawConn, len(filters))
	for i, f := range filters {
		conns[i] = rawLogin(t, srv, user)
		if got, _ := notifyCmd(t, conns[i], "SET ("+f.filter+" (MessageNew MessageExpunge))", "OK"); len(got) != 0 {
			t.Errorf("NOTIFY SET (%s ...): %q", f.filter, got)
		}
	}
	// Selected in INBOX: INBOX's own messages come as EXISTS and FETCH,
	// no STATUS; the other mailboxes as for personal.
	sel := rawLogin(t, srv, user)
	rawSelect(t, sel, "INBOX")
	notifyCmd(t, sel, "SET (selected (MessageNew (UID) MessageExpunge)) (personal (MessageNew MessageExpunge))", "OK")
	delayed := rawLogin(t, srv, user)
	rawSelect(t, delayed, "INBOX")
	notifyCmd(t, delayed, "SET (selected-delayed (MessageNew (UID) MessageExpunge))", "OK")
	// No selected filter: nothing of INBOX's messages but what the store
	// tells (section 3.1: the same as SELECTED NONE).
	none := rawLogin(t, srv, user)
	rawSelect(t, none, "INBOX")
	notifyCmd(t, none, "SET (personal (MessageNew MessageExpunge))", "OK")
	sel.Idle()
	delayed.Idle()
	none.Idle()

	for _, m := range boxes {
		appendMsg(t, a, m, "to "+m)
	}
	wire := func(m string) string { return testkit.Quote(m) }
	for i, f := range filters {
		var want []string
		for _, m := range f.want {
			if m == "INBOX" {
				want = append(want, status("INBOX", 1, 2, 1))
			} else {
				want = append(want, status(wire(m), 1, 2, 1))
			}
		}
		t.Run(f.filter, func(t *testing.T) {
			expectAnyOrder(t, conns[i], want...)
			conns[i].ExpectNothing(t, quietWait)
		})
	}
	var others []string
	for _, m := range boxes[1:] {
		others = append(others, status(wire(m), 1, 2, 1))
	}
	// The store's RECENT goes to one of the sessions in INBOX; the rest is
	// the same for each: EXISTS, one FETCH for a selected filter, and the
	// STATUS of the other mailboxes for personal.
	got := readUnrecent(t, sel, 2+len(others))
	if got[0] != "* 1 EXISTS" || got[1] != "* 1 FETCH (UID 1)" {
		t.Errorf("selected: %q, want EXISTS and FETCH (UID 1) first", got)
	}
	sameLines(t, got[2:], others)
	sel.ExpectNothing(t, quietWait)
	if got := readUnrecent(t, delayed, 2); got[0] != "* 1 EXISTS" || got[1] != "* 1 FETCH (UID 1)" {
		t.Errorf("selected-delayed: %q, want EXISTS and FETCH (UID 1)", got)
	}
	delayed.ExpectNothing(t, quietWait)
	got = readUnrecent(t, none, 1+len(others))
	if got[0] != "* 1 EXISTS" {
		t.Errorf("without a selected filter: %q, want EXISTS first", got)
	}
	sameLines(t, got[1:], others)
	none.ExpectNothing(t, quietWait)

	// MessageExpunge in the selected mailbox is the store's EXPUNGE, in
	// IDLE (which allows it, also under selected-delayed). The store tells
	// the flag change before it as well (FlagChange not asked for: the
	// selected mailbox's lines are the store's, docs/notify.md).
	expunge(t, a, "INBOX")
	for _, c := range []*testkit.RawConn{sel, delayed} {
		if l := readLines(t, c, expectWait, 1)[0]; !deletedRe.MatchString(l) {
			t.Errorf("STORE +FLAGS \\Deleted: %q", l)
		}
		c.Expect(t, expectWait, "* 1 EXPUNGE")
	}
	doneQuiet(t, sel)
	doneQuiet(t, delayed)
}

// readUnrecent reads n lines from c, leaving out the store's RECENT lines
// (RFC 3501 gives \Recent to one session only).
func readUnrecent(t *testing.T, c *testkit.RawConn, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		l := readLines(t, c, expectWait, 1)[0]
		if !recentRe.MatchString(l) {
			got = append(got, l)
		}
	}
	return got
}

var deletedRe = regexp.MustCompile(`^\* 1 FETCH \(FLAGS \(\\Deleted( \\Recent)?\) UID 1\)$`)

var recentRe = regexp.MustCompile(`^\* \d+ RECENT$`)

// sameLines fails the test unless got are want in some order.
func sameLines(t *testing.T, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("lines differ (order aside)\n got: %q\nwant: %q", got, want)
	}
}
