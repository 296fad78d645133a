// SPDX-License-Identifier: GPL-3.0-or-later

// Package bus carries events from where they happen to the sessions that
// must hear of them: in this process only (Local), or across every maddy
// instance that shares one PostgreSQL database (Postgres, on LISTEN/NOTIFY).
//
// Of this module, bus depends on event and metrics only (imports_test.go
// holds it); it knows the session registry only as a Sink. A bus never
// blocks the storage call that publishes: a remote copy that cannot be
// queued is dropped, counted and logged.
package bus

import (
	"github.com/maddy-notify/maddy-notify/event"
)

// Sink is where a bus delivers: the session registry of this instance.
type Sink interface {
	// Publish hands an event to the sessions of its account.
	Publish(ev event.Event)
	// Reconcile asks the account's sessions for a fresh STATUS by state.
	Reconcile(account string)
	// ResyncAll reconciles every account by state (STATUS and mailbox
	// list), after notifications may have been lost.
	ResyncAll()
}

// Bus is what the storage side publishes to. Its methods may be called
// from any goroutine and never wait for a client or the network.
type Bus interface {
	Publish(ev event.Event)
	Reconcile(account string)
	// Close stops the bus's goroutines and waits for them.
	Close() error
}

// Local delivers to this instance's sink only (broker none).
type Local struct{ Sink Sink }

// Publish delivers ev to the sink.
func (l Local) Publish(ev event.Event) { l.Sink.Publish(ev) }

// Reconcile delivers the request to the sink.
func (l Local) Reconcile(account string) { l.Sink.Reconcile(account) }

// Close does nothing.
func (l Local) Close() error { return nil }
