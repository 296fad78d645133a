// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of RFC 5465 NOTIFY: the exchanges of the RFC's section
// 3.1 and the commands real clients (FairEmail, Evolution) send, with the
// exact lines a NOTIFY session reads.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// delimChar returns the store's hierarchy delimiter character from its
// wire form (storeDelimiter's `"."`).
func delimChar(t *testing.T, wire string) string {
	t.Helper()
	if len(wire) != 3 || wire[0] != '"' {
		t.Fatalf("delimiter %s is not a one-character quoted string", wire)
	}
	return wire[1:2]
}

// expunge deletes every message of mailbox through a (which leaves a with
// mailbox selected).
func expunge(t *testing.T, a *imapclient.Client, mailbox string) {
	t.Helper()
	if _, err := a.Select(mailbox, nil).Wait(); err != nil {
		t.Fatalf("SELECT %s: %v", mailbox, err)
	}
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagDeleted)
	mustOK(t, "EXPUNGE "+mailbox, a.Expunge().Close())
}

// headerOf returns the header of msg, the blank line included.
func headerOf(msg string) string {
	i := strings.Index(msg, "\r\n\r\n")
	return msg[:i+4]
}

// TestNotify5465Section31Examples replays RFC 5465 section 3.1's exchange
// (with errata 1804 and 2318): the client in INBOX asks for new and
// expunged messages there with UID and three header fields, and for the
// Lists subtree; later it adds "misc" after a STATUS of its own.
//
// As printed, both the RFC's text (events without parentheses) and its
// erratum 1804 form ("(subtree Lists (MessageNew))", MessageNew without
// MessageExpunge, which section 5 requires to be answered BAD) are refused
// with BAD (docs/notify.md says why); with "(MessageNew MessageExpunge)"
// each step is answered as the RFC shows, with the module's STATUS items
// (status_items, MESSAGES UIDNEXT UNSEEN by default) instead of the RFC's
// MESSAGES UIDNEXT UIDVALIDITY.
func TestNotify5465Section31Examples(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := rawLogin(t, srv, user)
	d := delimChar(t, storeDelimiter(t, b))
	lemonade := "Lists" + d + "Lemonade"
	for _, m := range []string{"Lists", lemonade, "misc", "Other"} {
		mustOK(t, "CREATE "+m, a.Create(m, nil).Wait())
	}
	appendMsg(t, a, lemonade, "on the list")
	rawSelect(t, b, "INBOX")

	const fetchAtt = "(uid body.peek[header.fields (from to subject)])"
	printed := "SET STATUS (selected MessageNew " + fetchAtt + " MessageExpunge) (subtree Lists MessageNew)"
	if _, tagged := notifyCmd(t, b, printed, "BAD"); tagged != `BAD NOTIFY SET: event group 1: expected a list of events or NONE, got "MessageNew"` {
		t.Errorf("NOTIFY %s: %s", printed, tagged)
	}
	erratum := "SET STATUS (selected (MessageNew " + fetchAtt + " MessageExpunge)) (subtree Lists (MessageNew))"
	if _, tagged := notifyCmd(t, b, erratum, "BAD"); tagged != "BAD NOTIFY SET: event group 2: MessageNew and MessageExpunge must be given together" {
		t.Errorf("NOTIFY %s: %s", erratum, tagged)
	}

	// C: b notify set status (selected (MessageNew (uid
	//    body.peek[header.fields (from to subject)]) MessageExpunge))
	//    (subtree Lists (MessageNew))
	// S: * STATUS Lists (...)
	// S: * STATUS Lists/Lemonade (...)
	// S: b OK done
	got, tagged := notifyCmd(t, b, "SET STATUS (selected (MessageNew "+fetchAtt+" MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))", "OK")
	if want := []string{initialStatus(t, srv, `"Lists"`, 0, 1, 0), initialStatus(t, srv, `"`+lemonade+`"`, 1, 2, 1)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("NOTIFY SET STATUS: %q, want %q", got, want)
	}
	if tagged != "OK NOTIFY completed" {
		t.Errorf("NOTIFY SET STATUS: %s", tagged)
	}

	// A new message in INBOX: EXISTS (the store's), then FETCH of UID and
	// the header fields (the module's), in IDLE.
	b.Idle()
	msg := testkit.Message("to INBOX")
	appendRaw(t, a, "INBOX", msg)
	hdr := "From: Sender <sender@maddy.test>\r\nTo: User <user@maddy.test>\r\nSubject: to INBOX\r\n\r\n"
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT",
		fmt.Sprintf("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM TO SUBJECT)] {%d}\r\n%s)", len(hdr), hdr))
	// In the subtree: STATUS; outside it: nothing.
	appendMsg(t, a, lemonade, "second")
	b.Expect(t, expectWait, status(`"`+lemonade+`"`, 2, 3, 2))
	appendMsg(t, a, "misc", "not watched yet")
	appendMsg(t, a, "Other", "never watched")
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)

	// C: d STATUS misc (UIDVALIDITY UIDNEXT MESSAGES)
	// S: * STATUS misc (...)
	// S: d OK STATUS completed
	// C: e notify set (selected (...)) (subtree Lists (MessageNew))
	//    (mailboxes misc (MessageNew))
	// S: e OK done
	untagged := mustCmd(t, b, "STATUS misc (UIDVALIDITY UIDNEXT MESSAGES)")
	if len(untagged) != 1 || !strings.HasPrefix(untagged[0], `* STATUS "misc" (`) {
		t.Errorf("STATUS misc: %q", untagged)
	}
	got, tagged = notifyCmd(t, b, "SET (selected (MessageNew "+fetchAtt+" MessageExpunge)) (subtree Lists (MessageNew MessageExpunge)) (mailboxes misc (MessageNew MessageExpunge))", "OK")
	if len(got) != 0 || tagged != "OK NOTIFY completed" {
		t.Errorf("NOTIFY SET without STATUS: %q %s, want only the tagged OK", got, tagged)
	}
	appendMsg(t, a, "misc", "watched now")
	b.Expect(t, expectWait, status(`"misc"`, 2, 3, 2))
	expunge(t, a, "misc")
	b.Expect(t, expectWait, status(`"misc"`, 1, 3, 1))
	appendMsg(t, a, "Other", "still not watched")
	b.ExpectNothing(t, quietWait)

	// C: f notify none — nothing more is told, the store's own lines for
	// the selected mailbox aside.
	if got, tagged := notifyCmd(t, b, "NONE", "OK"); len(got) != 0 || tagged != "OK NOTIFY completed" {
		t.Errorf("NOTIFY NONE: %q %s", got, tagged)
	}
	appendMsg(t, a, "misc", "after NONE")
	appendMsg(t, a, lemonade, "after NONE")
	mustOK(t, "CREATE after", a.Create("after", nil).Wait())
	b.ExpectNothing(t, quietWait)
}

// TestNotify5465FairEmail: FairEmail's NOTIFY works end to end: initial
// STATUS of each subscribed mailbox but the selected one, EXISTS then
// FETCH (UID) for a new message in the selected mailbox, STATUS of another
// subscribed mailbox on APPEND, EXPUNGE and a flag change, nothing for an
// unsubscribed one.
func TestNotify5465FairEmail(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	for _, m := range []string{"Sub", "Unsub"} {
		mustOK(t, "CREATE "+m, a.Create(m, nil).Wait())
	}
	// The store subscribes what it creates (and INBOX).
	mustOK(t, "UNSUBSCRIBE Unsub", a.Unsubscribe("Unsub").Wait())
	appendMsg(t, a, "Sub", "one")
	b := rawLogin(t, srv, user)
	rawSelect(t, b, "INBOX")

	got, _ := notifyCmd(t, b, "SET STATUS (selected (MessageNew (uid) MessageExpunge FlagChange)) (subscribed (MessageNew MessageExpunge FlagChange))", "OK")
	if want := []string{initialStatus(t, srv, `"Sub"`, 1, 2, 1)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("NOTIFY SET STATUS: %q, want %q", got, want)
	}
	b.Idle()
	appendMsg(t, a, "INBOX", "new")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT", "* 1 FETCH (UID 1)")
	appendMsg(t, a, "Sub", "two")
	b.Expect(t, expectWait, status(`"Sub"`, 2, 3, 2))
	if _, err := a.Select("Sub", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	b.Expect(t, expectWait, status(`"Sub"`, 2, 3, 1))
	expunge(t, a, "Sub")
	b.Expect(t, expectWait, status(`"Sub"`, 1, 3, 1))
	appendMsg(t, a, "Unsub", "unsubscribed")
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)
}

// TestNotify5465Evolution: Evolution's NOTIFY (camel-imapx-server.c):
// a new message in the selected mailbox comes with UID, RFC822.SIZE,
// RFC822.HEADER, FLAGS and BODYSTRUCTURE; personal message events are
// STATUS lines, mailbox events LIST lines.
func TestNotify5465Evolution(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")
	got, _ := notifyCmd(t, b, "SET (selected (MessageNew (UID RFC822.SIZE RFC822.HEADER FLAGS BODYSTRUCTURE) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))", "OK")
	if len(got) != 0 {
		t.Errorf("NOTIFY SET: %q", got)
	}

	msg := testkit.Message("for Evolution")
	b.Idle()
	appendRaw(t, a, "INBOX", msg)
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	line := readLines(t, b, expectWait, 1)[0]
	doneQuiet(t, b)
	bs := moduleBodyStructure(t, fetchItem(t, b, 1, "BODYSTRUCTURE"))
	hdr := headerOf(msg)
	if want := fmt.Sprintf("* 1 FETCH (UID 1 RFC822.SIZE %d RFC822.HEADER {%d}\r\n%s FLAGS (\\Recent) BODYSTRUCTURE %s)", len(msg), len(hdr), hdr, bs); line != want {
		t.Errorf("new message:\n got %q\nwant %q", line, want)
	}

	appendMsg(t, a, "Archive", "filed")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	mustOK(t, "CREATE Folder", a.Create("Folder", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Folder"`, d)) // the store subscribes it
	mustOK(t, "UNSUBSCRIBE Folder", a.Unsubscribe("Folder").Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "Folder"`, d))
	b.ExpectNothing(t, quietWait)
}
