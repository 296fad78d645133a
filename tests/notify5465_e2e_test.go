// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of RFC 5465 NOTIFY: a client that asks is told what it
// asked for, in authenticated and selected state, with or without IDLE.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// initialStatus is the line NOTIFY SET STATUS writes for mailbox (wire
// form) with these values: MESSAGES, UIDNEXT, UIDVALIDITY (the store's,
// read by a STATUS command of a session of its own) and UNSEEN.
func initialStatus(t *testing.T, srv *testkit.Server, wire string, messages, uidNext, unseen int) string {
	t.Helper()
	c := rawLogin(t, srv, user)
	defer c.Close()
	untagged := mustCmd(t, c, "STATUS "+wire+" (UIDVALIDITY)")
	var v int
	if len(untagged) != 1 {
		t.Fatalf("STATUS %s (UIDVALIDITY): %q", wire, untagged)
	}
	if _, err := fmt.Sscanf(untagged[0][strings.LastIndex(untagged[0], "UIDVALIDITY "):], "UIDVALIDITY %d)", &v); err != nil {
		t.Fatalf("STATUS %s (UIDVALIDITY): %q: %v", wire, untagged[0], err)
	}
	return fmt.Sprintf("* STATUS %s (MESSAGES %d UIDNEXT %d UIDVALIDITY %d UNSEEN %d)", wire, messages, uidNext, v, unseen)
}

// notifyCmd sends NOTIFY args and returns the untagged lines before its
// tagged response, failing the test unless that starts with want ("OK",
// "NO", "BAD").
func notifyCmd(t *testing.T, c *testkit.RawConn, args, want string) (untagged []string, tagged string) {
	t.Helper()
	untagged, tagged = c.Cmd("NOTIFY " + args)
	if !strings.HasPrefix(tagged, want) {
		t.Fatalf("NOTIFY %s: %q %s, want %s", args, untagged, tagged, want)
	}
	return untagged, tagged
}

// TestNotifyAuthenticatedState: a client that has not selected a mailbox
// and does not IDLE gets STATUS and LIST lines as the other device acts,
// with NOTIFY SET STATUS's initial STATUS lines before its tagged OK.
func TestNotifyAuthenticatedState(t *testing.T) {
	t.Parallel()
	srv := testkit.Start(t, testkit.Options{Config: notifyConfigPlain(""), Ports: []string{"imap", "smtp"}})
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)

	got, _ := notifyCmd(t, b, "SET STATUS (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))", "OK")
	// The store's LIST order; MESSAGES, UIDNEXT and UIDVALIDITY, as RFC
	// 5465 section 3.1 requires, then the configured UNSEEN.
	want := []string{initialStatus(t, srv, "INBOX", 0, 1, 0), initialStatus(t, srv, `"Archive"`, 0, 1, 0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("NOTIFY SET STATUS: %q, want %q", got, want)
	}

	appendMsg(t, a, "Archive", "filed")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	mustOK(t, "CREATE Folder", a.Create("Folder", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Folder"`, d)) // the store subscribes what it creates
	mustOK(t, "RENAME Folder Folder2", a.Rename("Folder", "Folder2", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Folder2" ("OLDNAME" ("Folder"))`, d))
	mustOK(t, "DELETE Folder2", a.Delete("Folder2").Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Folder2"`, d))
	b.ExpectNothing(t, quietWait)
}
