// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

// The decorators with a publisher and no registry, as the module uses them
// in maddy's CLI: events are published, no session is registered, and a
// mailbox opened without a connection is handed out undecorated (maddy's
// imap-msgs asserts go-imap-sql's type) and reported as unobserved.

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	imapsql "github.com/foxcpp/go-imap-sql"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

type cliPub struct {
	mu         sync.Mutex
	events     []string
	unobserved []string
}

func (p *cliPub) Publish(ev event.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ev.Validate(); err != nil {
		p.events = append(p.events, "invalid: "+err.Error())
		return
	}
	p.events = append(p.events, ev.Kind.String()+" "+ev.Account+" "+ev.Mailbox)
}

func (p *cliPub) Unobserved(account, mailbox string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unobserved = append(p.unobserved, account+" "+mailbox)
}

func TestPublisherWithoutRegistry(t *testing.T) {
	store := testkit.SQLiteStore(t, acct)
	inner, err := store.GetUser(acct)
	if err != nil {
		t.Fatal(err)
	}
	pub := &cliPub{}
	u := WrapUser(inner, nil, pub, 1, 0)

	if err := u.CreateMailbox("Box"); err != nil {
		t.Fatal(err)
	}
	if err := u.CreateMessage("Box", nil, time.Now(), strings.NewReader(testkit.Message("x")), nil); err != nil {
		t.Fatal(err)
	}
	if err := u.RenameMailbox("Box", "Box2"); err != nil {
		t.Fatal(err)
	}
	_, mbox, err := u.GetMailbox("Box2", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mbox.(*imapsql.Mailbox); !ok {
		t.Errorf("GetMailbox without a connection returned %T, want the store's *imapsql.Mailbox", mbox)
	}
	if err := u.DeleteMailbox("Box2"); err != nil {
		t.Fatal(err)
	}

	pub.mu.Lock()
	defer pub.mu.Unlock()
	want := []string{"MailboxCreate alice Box", "MessageAppend alice Box", "MailboxRename alice Box2", "MailboxDelete alice Box2"}
	if !slices.Equal(pub.events, want) {
		t.Errorf("published %q, want %q", pub.events, want)
	}
	if want := []string{"alice Box2"}; !slices.Equal(pub.unobserved, want) {
		t.Errorf("unobserved %q, want %q", pub.unobserved, want)
	}
	if u.session != nil {
		t.Error("a session was registered without a registry")
	}
}
