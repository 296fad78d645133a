// SPDX-License-Identifier: GPL-3.0-or-later

package notify_test

// End-to-end tests of RFC 5465 NOTIFY: a client that asks is told what it
// asked for, in authenticated and selected state, with or without IDLE.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

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
	want := []string{status("INBOX", 0, 1, 0), status(`"Archive"`, 0, 1, 0)} // the store's LIST order
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
