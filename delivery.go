// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"context"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"
	"github.com/foxcpp/maddy/framework/address"
	"github.com/foxcpp/maddy/framework/buffer"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/bus"
	"github.com/maddy-notify/maddy-notify/event"
)

// delivery wraps a delivery into the inner store. Once it commits, each
// mailbox it filed the message into is published as MessageNew, so that
// the sessions of its account get that mailbox's STATUS (one query, however
// many folders the account has). The inner store (its delivery_map,
// imap_filter, quarantine) decides the mailboxes; deliveryTargets reads them
// from storage.imapsql's delivery before it commits. When they cannot be
// read (another store), the accounts of the recipients reconcile their
// STATUS instead: a fresh STATUS of every mailbox in scope.
type delivery struct {
	module.Delivery
	bus   bus.Bus
	rcpts []string
}

// partialDelivery is delivery for inner deliveries that report a status per
// recipient (module.PartialDelivery).
type partialDelivery struct {
	*delivery
	partial module.PartialDelivery
}

var (
	_ module.Delivery        = (*delivery)(nil)
	_ module.PartialDelivery = (*partialDelivery)(nil)
)

func wrapDelivery(d module.Delivery, b bus.Bus) module.Delivery {
	w := &delivery{Delivery: d, bus: b}
	if p, ok := d.(module.PartialDelivery); ok {
		return &partialDelivery{delivery: w, partial: p}
	}
	return w
}

func (d *delivery) AddRcpt(ctx context.Context, rcptTo string, opts smtp.RcptOptions) error {
	if err := d.Delivery.AddRcpt(ctx, rcptTo, opts); err != nil {
		return err
	}
	d.rcpts = append(d.rcpts, rcptTo)
	return nil
}

func (d *delivery) Commit(ctx context.Context) error {
	// Read before the inner Commit, which forgets them.
	targets, known := deliveryTargets(d.Delivery)
	if err := d.Delivery.Commit(ctx); err != nil {
		return err
	}
	if known && len(targets) > 0 {
		// Stamped after the commit returned (registry.Publish).
		now := time.Now()
		for _, t := range targets {
			d.bus.Publish(event.Event{Kind: event.MessageNew, Account: t.account, Mailbox: t.mailbox, Time: now})
		}
		return nil
	}
	for _, rcpt := range d.rcpts {
		d.bus.Reconcile(accountFor(rcpt))
	}
	return nil
}

func (p *partialDelivery) BodyNonAtomic(ctx context.Context, c module.StatusCollector, header textproto.Header, body buffer.Buffer) {
	p.partial.BodyNonAtomic(ctx, c, header, body)
}

// accountFor maps a recipient address to the storage account name the way
// storage.imapsql does by default (delivery_normalize
// precis_casefold_email), for the reconciliation when deliveryTargets
// cannot tell. With a delivery_map in the inner store the account can
// differ; then only the selected mailbox of its sessions (the store's own
// EXISTS) shows the delivery.
func accountFor(rcpt string) string {
	if acct, err := address.PRECISFold(rcpt); err == nil {
		return acct
	}
	return rcpt
}
