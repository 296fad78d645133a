// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// End-to-end tests of RFC 5465 NOTIFY's events, its refusals, NOTIFY NONE
// and NOTIFY before login.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// envelopeOf is the ENVELOPE of testkit.Message(subject) in RFC 3501
// syntax.
func envelopeOf(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	return fmt.Sprintf(`("Mon, 02 Jan 2006 15:04:05 +0000" %s (("Sender" NIL "sender" "maddy.test")) (("Sender" NIL "sender" "maddy.test")) (("Sender" NIL "sender" "maddy.test")) (("User" NIL "user" "maddy.test")) NIL NIL NIL "<%s@maddy.test>")`,
		testkit.Quote(subject), hex.EncodeToString(sum[:8]))
}

// TestNotify5465MessageEvents: MessageNew with a fetch-att list of each
// kind, MessageExpunge and FlagChange, in the selected mailbox (the store's
// EXISTS, FETCH FLAGS and EXPUNGE, the module's FETCH) and in another one
// (STATUS); without FlagChange a flag change elsewhere is not told.
func TestNotify5465MessageEvents(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())

	sel := rawLogin(t, srv, user)
	rawSelect(t, sel, "INBOX")
	notifyCmd(t, sel, "SET (selected (MessageNew (UID FLAGS BODYSTRUCTURE ENVELOPE BODY.PEEK[HEADER] RFC822.SIZE) MessageExpunge FlagChange))", "OK")
	flags := rawLogin(t, srv, user)
	notifyCmd(t, flags, "SET (personal (MessageNew MessageExpunge FlagChange))", "OK")
	noFlags := rawLogin(t, srv, user)
	notifyCmd(t, noFlags, "SET (personal (MessageNew MessageExpunge))", "OK")
	sel.Idle()

	msg := testkit.Message("every item")
	appendRaw(t, a, "INBOX", msg)
	sel.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT")
	line := readLines(t, sel, expectWait, 1)[0]
	doneQuiet(t, sel)
	hdr := headerOf(msg)
	bs := moduleBodyStructure(t, fetchItem(t, sel, 1, "BODYSTRUCTURE"))
	if want := fmt.Sprintf("* 1 FETCH (UID 1 FLAGS (\\Recent) BODYSTRUCTURE %s ENVELOPE %s BODY[HEADER] {%d}\r\n%s RFC822.SIZE %d)",
		bs, envelopeOf("every item"), len(hdr), hdr, len(msg)); line != want {
		t.Errorf("new message:\n got %q\nwant %q", line, want)
	}
	if fl := fetchItem(t, sel, 1, "FLAGS"); fl != `\Recent` {
		t.Errorf("BODY.PEEK[HEADER] changed the flags: %s", fl)
	}
	// In the selected mailbox FlagChange and MessageExpunge are the
	// store's lines; the client is not idling: they come at NOOP.
	if _, err := a.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagFlagged)
	if got := noopUntil(t, sel, 1); !slices.Equal(got, []string{`* 1 FETCH (FLAGS (\Flagged \Recent) UID 1)`}) {
		t.Errorf("flag change in the selected mailbox: %q", got)
	}
	expunge(t, a, "INBOX")
	if got := noopUntil(t, sel, 2); !slices.Equal(got, []string{`* 1 FETCH (FLAGS (\Deleted \Flagged \Recent) UID 1)`, "* 1 EXPUNGE"}) {
		t.Errorf("expunge in the selected mailbox: %q", got)
	}
	// The other two sessions were told of INBOX by STATUS meanwhile (no
	// selected mailbox): new, flagged (UNSEEN unchanged, but the client
	// asked for FlagChange: it is told only if a STATUS item changed),
	// deleted, expunged.
	flags.Expect(t, expectWait, status("INBOX", 1, 2, 1), status("INBOX", 0, 2, 0))
	noFlags.Expect(t, expectWait, status("INBOX", 1, 2, 1), status("INBOX", 0, 2, 0))

	// In another mailbox: APPEND, \Seen, EXPUNGE.
	appendMsg(t, a, "Archive", "filed")
	flags.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	noFlags.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	if _, err := a.Select("Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	store(t, a, imap.SeqSetNum(1), imap.StoreFlagsAdd, imap.FlagSeen)
	flags.Expect(t, expectWait, status(`"Archive"`, 1, 2, 0))
	noFlags.ExpectNothing(t, quietWait)
	expunge(t, a, "Archive")
	flags.Expect(t, expectWait, status(`"Archive"`, 0, 2, 0))
	noFlags.Expect(t, expectWait, status(`"Archive"`, 0, 2, 0))
	flags.ExpectNothing(t, quietWait)
	sel.ExpectNothing(t, quietWait)
}

// TestNotify5465MailboxEvents: MailboxName (create, rename with OLDNAME,
// of a hierarchy too, delete) and SubscriptionChange, each only when
// asked for; the LIST of a created mailbox says \Subscribed (the store
// subscribes what it creates, RFC 5465 section 5.4).
func TestNotify5465MailboxEvents(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	names := rawLogin(t, srv, user)
	d := storeDelimiter(t, names)
	c := delimChar(t, d)
	notifyCmd(t, names, "SET (personal (MailboxName))", "OK")
	subs := rawLogin(t, srv, user)
	rawSelect(t, subs, "INBOX") // mailbox events of any mailbox in selected state
	notifyCmd(t, subs, "SET (personal (SubscriptionChange))", "OK")

	mustOK(t, "CREATE Parent", a.Create("Parent", nil).Wait())
	names.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Parent"`, d))
	mustOK(t, "CREATE Parent/Kid", a.Create("Parent"+c+"Kid", nil).Wait())
	names.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Parent%sKid"`, d, c))
	appendMsg(t, a, "Parent", "no STATUS without message events")
	mustOK(t, "RENAME Parent P2", a.Rename("Parent", "P2", nil).Wait())
	expectAnyOrder(t, names,
		fmt.Sprintf(`* LIST (\HasChildren \Subscribed) %s "P2" ("OLDNAME" ("Parent"))`, d),
		fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "P2%sKid" ("OLDNAME" ("Parent%sKid"))`, d, c, c))
	mustOK(t, "DELETE P2/Kid", a.Delete("P2"+c+"Kid").Wait())
	names.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "P2%sKid"`, d, c))
	subs.ExpectNothing(t, quietWait)

	mustOK(t, "UNSUBSCRIBE P2", a.Unsubscribe("P2").Wait())
	subs.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren) %s "P2"`, d))
	mustOK(t, "SUBSCRIBE P2", a.Subscribe("P2").Wait())
	subs.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "P2"`, d))
	mustOK(t, "SUBSCRIBE INBOX", a.Subscribe("INBOX").Wait())
	subs.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s INBOX`, d))
	names.ExpectNothing(t, quietWait)
	subs.ExpectNothing(t, quietWait)
}

// TestNotify5465Refusals: each refusal is answered as docs/notify.md
// says, and a refused NOTIFY leaves what the session asked before.
func TestNotify5465Refusals(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	notifyCmd(t, b, "SET (personal (MailboxName))", "OK")
	const badEvent = "NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] unsupported NOTIFY event: "
	for _, tt := range []struct{ args, tagged string }{
		{"SET (personal (MessageNew))", "BAD NOTIFY SET: event group 1: MessageNew and MessageExpunge must be given together"},
		{"SET (personal (MessageExpunge))", "BAD NOTIFY SET: event group 1: MessageNew and MessageExpunge must be given together"},
		{"SET (personal (FlagChange))", "BAD NOTIFY SET: event group 1: FlagChange requires MessageNew and MessageExpunge"},
		{"SET (selected NONE) (selected-delayed NONE)", "BAD NOTIFY SET: event group 2: selected-delayed after selected: only one of selected and selected-delayed may be given"},
		{"SET (selected (MailboxName))", "BAD NOTIFY SET: event group 1: MailboxName is not a message event and cannot be given for selected"},
		{"SET (personal (MessageNew (UID) MessageExpunge))", "BAD NOTIFY SET: event group 1: a fetch-att list for MessageNew is allowed only with selected or selected-delayed, not personal"},
		{"SET (foobar (MessageNew MessageExpunge))", `BAD NOTIFY SET: event group 1: unknown mailbox filter "foobar"`},
		{"SET (selected (MessageNew MessageExpunge AnnotationChange))", badEvent + "AnnotationChange"},
		{"SET (personal (MailboxName FooBar))", badEvent + `"FooBar"`},
		{"SET (personal (MailboxMetadataChange))", badEvent + "MailboxMetadataChange"},
		{"SET (personal (ServerMetadataChange))", badEvent + "ServerMetadataChange"},
	} {
		want := tt.tagged[:strings.IndexByte(tt.tagged, ' ')]
		if got, tagged := notifyCmd(t, b, tt.args, want); len(got) != 0 || tagged != tt.tagged {
			t.Errorf("NOTIFY %s: %q %s\nwant %s", tt.args, got, tagged, tt.tagged)
		}
	}
	mustOK(t, "CREATE Still", a.Create("Still", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Still"`, d))
	b.ExpectNothing(t, quietWait)
}

// TestNotify5465None: after NOTIFY NONE nothing more is told, in
// authenticated and selected state (the selected mailbox's lines are the
// store's, as for any client); NOTIFY SET works again after it.
func TestNotify5465None(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	all := "SET (selected (MessageNew (UID) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))"
	notifyCmd(t, b, all, "OK")
	if got, tagged := notifyCmd(t, b, "NONE", "OK"); len(got) != 0 || tagged != "OK NOTIFY completed" {
		t.Errorf("NOTIFY NONE: %q %s", got, tagged)
	}
	rawSelect(t, b, "INBOX")
	b.Idle()
	appendMsg(t, a, "Archive", "after NONE")
	mustOK(t, "CREATE Folder", a.Create("Folder", nil).Wait())
	mustOK(t, "UNSUBSCRIBE Folder", a.Unsubscribe("Folder").Wait())
	appendMsg(t, a, "INBOX", "selected")
	b.Expect(t, expectWait, "* 1 EXISTS", "* 1 RECENT") // the store's, no FETCH
	b.ExpectNothing(t, quietWait)
	doneQuiet(t, b)

	notifyCmd(t, b, all, "OK")
	appendMsg(t, a, "Archive", "after SET")
	b.Expect(t, expectWait, status(`"Archive"`, 2, 3, 2))
	mustOK(t, "DELETE Folder", a.Delete("Folder").Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\NonExistent) %s "Folder"`, d))
}

// TestNotify5465BeforeLogin: NOTIFY is neither advertised nor accepted
// before login; after login it is both.
func TestNotify5465BeforeLogin(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	b := testkit.DialRaw(t, srv.Addr("imap"))
	caps := func() []string {
		untagged := mustCmd(t, b, "CAPABILITY")
		if len(untagged) != 1 {
			t.Fatalf("CAPABILITY: %q", untagged)
		}
		return strings.Fields(untagged[0])
	}
	if slices.Contains(caps(), "NOTIFY") || strings.Contains(b.Greeting, "NOTIFY") {
		t.Errorf("NOTIFY advertised before login")
	}
	if _, tagged := b.Cmd("NOTIFY SET (personal (MailboxName))"); tagged != "NO Not authenticated" {
		t.Errorf("NOTIFY before login: %s", tagged)
	}
	b.Login(user, pass)
	if !slices.Contains(caps(), "NOTIFY") {
		t.Errorf("NOTIFY not advertised after login")
	}
	notifyCmd(t, b, "SET (personal (MailboxName))", "OK")
}

// TestNotify5465SelectedNoIdle: a NOTIFY client in selected state that
// neither idles nor sends commands is written STATUS and LIST lines as
// the other device acts (the session's writer, between commands).
func TestNotify5465SelectedNoIdle(t *testing.T) {
	t.Parallel()
	srv := startNotify(t)
	a := testkit.DialClient(t, srv.Addr("imap"), user, pass)
	mustOK(t, "CREATE Archive", a.Create("Archive", nil).Wait())
	b := rawLogin(t, srv, user)
	d := storeDelimiter(t, b)
	rawSelect(t, b, "INBOX")
	notifyCmd(t, b, "SET (selected (MessageNew (UID) MessageExpunge)) (personal (MessageNew MessageExpunge MailboxName))", "OK")
	appendMsg(t, a, "Archive", "filed")
	b.Expect(t, expectWait, status(`"Archive"`, 1, 2, 1))
	mustOK(t, "CREATE Folder", a.Create("Folder", nil).Wait())
	b.Expect(t, expectWait, fmt.Sprintf(`* LIST (\HasNoChildren \Subscribed) %s "Folder"`, d))
	// The selected mailbox's new message waits for a command (the
	// store's EXISTS goes out at NOOP), its FETCH right after.
	appendMsg(t, a, "INBOX", "selected")
	b.ExpectNothing(t, quietWait)
	got := noopUntil(t, b, 3)
	if !slices.Equal(got, []string{"* 1 EXISTS", "* 1 RECENT", "* 1 FETCH (UID 1)"}) {
		t.Errorf("NOOP after a new message: %q", got)
	}
}
