// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"bufio"
	"context"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/event"
)

// recordingBus records what the delivery wrapper publishes.
type recordingBus struct {
	mu         sync.Mutex
	events     []event.Event
	reconciled []string
}

func (b *recordingBus) Publish(ev event.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, ev)
}

func (b *recordingBus) Reconcile(acct string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reconciled = append(b.reconciled, acct)
}

func (b *recordingBus) Close() error { return nil }

const testMessage = "From: <sender@example.org>\r\nTo: <a@maddy.test>\r\nSubject: hi\r\n\r\nhello\r\n"

// deliverThrough runs one delivery of testMessage to rcpts through
// storage.imapsql (quarantined when quarantine is set), wrapped for bus,
// and returns what deliveryTargets read before the commit.
func deliverThrough(t *testing.T, inner module.Storage, bus *recordingBus, quarantine bool, rcpts ...string) ([]deliveryTarget, bool) {
	t.Helper()
	ctx := context.Background()
	d, err := inner.(module.DeliveryTarget).Start(ctx, &module.MsgMetadata{ID: "test", Quarantine: quarantine}, "sender@example.org")
	if err != nil {
		t.Fatal(err)
	}
	w := wrapDelivery(d, bus)
	for _, r := range rcpts {
		if err := w.AddRcpt(ctx, r, smtp.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	hdr, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(testMessage)))
	if err != nil {
		t.Fatal(err)
	}
	body := testMessage[strings.Index(testMessage, "\r\n\r\n")+4:]
	if err := w.Body(ctx, hdr, buffer.MemoryBuffer{Slice: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	targets, ok := deliveryTargets(d)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return targets, ok
}

// TestDeliveryTargetsShape fails loudly if maddy's storage.imapsql or
// go-imap-sql stop keeping a delivery's target mailboxes where
// deliveryTargets reads them; it also checks that the wrapper publishes
// MessageNew for exactly those mailboxes, into which the store did file
// the message.
func TestDeliveryTargetsShape(t *testing.T) {
	innerMod, err := module.GetInstance(newInner(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()
	store := innerMod.(module.ManageableStorage)
	for _, acct := range []string{"a@maddy.test", "b@maddy.test"} {
		if err := store.CreateIMAPAcct(acct); err != nil {
			t.Fatal(err)
		}
	}
	messages := func(acct, mbox string) uint32 {
		u, err := store.GetIMAPAcct(acct)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Logout()
		st, err := u.Status(mbox, []imap.StatusItem{imap.StatusMessages})
		if err != nil {
			t.Fatalf("STATUS %s of %s: %v", mbox, acct, err)
		}
		return st.Messages
	}

	for _, c := range []struct {
		name       string
		quarantine bool
		rcpts      []string
		want       []deliveryTarget
	}{
		{"one recipient", false, []string{"a@maddy.test"}, []deliveryTarget{{"a@maddy.test", "INBOX"}}},
		{"two recipients", false, []string{"a@maddy.test", "B@maddy.test"},
			[]deliveryTarget{{"a@maddy.test", "INBOX"}, {"b@maddy.test", "INBOX"}}},
		{"quarantine", true, []string{"b@maddy.test"}, []deliveryTarget{{"b@maddy.test", "Junk"}}},
	} {
		bus := &recordingBus{}
		before := map[deliveryTarget]uint32{}
		for _, w := range c.want {
			if w.mailbox == "INBOX" {
				before[w] = messages(w.account, w.mailbox)
			}
		}
		got, ok := deliverThrough(t, innerMod.(module.Storage), bus, c.quarantine, c.rcpts...)
		if !ok || !reflect.DeepEqual(got, c.want) {
			t.Fatalf("%s: deliveryTargets = %v, %v; want %v, true (has storage.imapsql's delivery changed shape?)", c.name, got, ok, c.want)
		}
		for _, w := range c.want {
			if n := messages(w.account, w.mailbox); n != before[w]+1 {
				t.Errorf("%s: %s of %s holds %d messages, want %d", c.name, w.mailbox, w.account, n, before[w]+1)
			}
		}
		if len(bus.reconciled) != 0 {
			t.Errorf("%s: reconciled %v, want none", c.name, bus.reconciled)
		}
		if len(bus.events) != len(c.want) {
			t.Fatalf("%s: published %v, want MessageNew for %v", c.name, bus.events, c.want)
		}
		for i, ev := range bus.events {
			if ev.Kind != event.MessageNew || ev.Account != c.want[i].account || ev.Mailbox != c.want[i].mailbox ||
				ev.Origin != 0 || ev.Time.IsZero() || ev.Validate() != nil {
				t.Errorf("%s: event %d = %v, want MessageNew of %v", c.name, i, ev, c.want[i])
			}
		}
	}

	if _, ok := deliveryTargets(&otherDelivery{}); ok {
		t.Error("deliveryTargets read a delivery that is not storage.imapsql's")
	}
	if _, ok := deliveryTargets(nil); ok {
		t.Error("deliveryTargets read nil")
	}
}

// TestDeliveryReconcileFallback: a delivery whose mailboxes cannot be read
// (not storage.imapsql's) reconciles its recipients' accounts.
func TestDeliveryReconcileFallback(t *testing.T) {
	bus := &recordingBus{}
	w := wrapDelivery(&otherDelivery{}, bus)
	ctx := context.Background()
	for _, r := range []string{"A@maddy.test", "b@maddy.test"} {
		if err := w.AddRcpt(ctx, r, smtp.RcptOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a@maddy.test", "b@maddy.test"}; !reflect.DeepEqual(bus.reconciled, want) || len(bus.events) != 0 {
		t.Fatalf("reconciled %v, published %v; want %v and nothing", bus.reconciled, bus.events, want)
	}
}

// otherDelivery is a delivery of some other store.
type otherDelivery struct{}

func (*otherDelivery) AddRcpt(context.Context, string, smtp.RcptOptions) error { return nil }
func (*otherDelivery) Body(context.Context, textproto.Header, buffer.Buffer) error {
	return nil
}
func (*otherDelivery) Abort(context.Context) error  { return nil }
func (*otherDelivery) Commit(context.Context) error { return nil }
