// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"fmt"
	"sort"
	"sync"

	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/log"

	"github.com/maddy-notify/maddy-notify/bus"
	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/hooks"
)

// cliBlockName is the block maddy's CLI commands (imap-acct, imap-mboxes,
// imap-msgs) open when --cfg-block is not given.
const cliBlockName = "local_mailboxes"

// cliSender is what the module in maddy's CLI publishes to: the running
// server's socket (bus.SocketSender) or the PostgreSQL broker
// (bus.PostgresSender). Both send synchronously.
type cliSender interface {
	Publish(ev event.Event)
	Reconcile(account string)
	Close() error
}

// cliNotifier is the module's publisher in maddy's CLI (module.NoRun):
// the decorators' events go to the running server as they happen, and
// the accounts whose mailboxes the CLI opened undecorated (imap-msgs
// remove, move, copy, add-flags, ...: maddy asserts go-imap-sql's
// concrete mailbox type, so those changes cannot be hooked) are
// reconciled by state when maddy closes the store, after the changes are
// committed.
type cliNotifier struct {
	sender cliSender
	log    log.Logger

	mu         sync.Mutex
	unobserved map[string]bool // accounts to reconcile at finish
	done       bool
}

var _ hooks.UnobservedPublisher = (*cliNotifier)(nil)

// initCLI sets up the module in maddy's CLI: where its events go, and the
// note on maddy's update pipe message.
func (s *Store) initCLI(brokerDSN string, pipeOn bool) error {
	logger := log.Logger{Name: ModName + "/cli", Debug: s.log.Debug}
	var sender cliSender
	switch {
	case brokerDSN != "":
		pg, err := bus.NewPostgresSender(brokerDSN, "", logger)
		if err != nil {
			return fmt.Errorf("broker: %w", err)
		}
		sender = pg
	case s.instName != "":
		sender = bus.NewSocketSender(bus.SocketPath(config.RuntimeDirectory, s.instName), logger)
	default:
		// An inline block: maddy's CLI cannot name it.
		return nil
	}
	s.cli = &cliNotifier{sender: sender, log: logger, unobserved: map[string]bool{}}
	if pipeOn {
		// maddy's CLI looks for the update pipe on this block, does not
		// find it (its interface is internal to maddy) and prints "No
		// update pipe support, do not remove messages from mailboxes open
		// by clients" right after Init. The module has switched the inner
		// store's pipe on: that line does not apply.
		s.log.Msg("the update pipe of the wrapped storage is on: maddy's \"No update pipe support\" line below does not apply to storage.notify",
			"storage", instanceName(s.inner))
	}
	return nil
}

// hintCLIBlock logs, in the server, what maddy's CLI needs to reach this
// block when its default block is the wrapped storage: changes made there
// run no module code.
func (s *Store) hintCLIBlock() {
	if s.instName == cliBlockName || instanceName(s.inner) != cliBlockName {
		return
	}
	s.log.Msg("maddy's CLI opens the wrapped storage by default, whose changes reach IDLE sessions as the store's own EXISTS/EXPUNGE only: pass --cfg-block "+s.instName+
		" to imap-mboxes and imap-msgs, or name this block "+cliBlockName+" and the wrapped one differently",
		"block", s.instName, "storage", cliBlockName)
}

// Publish sends ev to the running server (or every instance).
func (n *cliNotifier) Publish(ev event.Event) {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if !done {
		n.sender.Publish(ev)
	}
}

// Unobserved records account for the reconcile at finish.
func (n *cliNotifier) Unobserved(account, _ string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unobserved[account] = true
}

// finish asks the server to reconcile the accounts whose mailboxes were
// opened undecorated and closes the sender. The CLI command has returned
// by then (maddy closes the store after it), so its changes are committed.
func (n *cliNotifier) finish() {
	n.mu.Lock()
	if n.done {
		n.mu.Unlock()
		return
	}
	n.done = true
	accounts := make([]string, 0, len(n.unobserved))
	for a := range n.unobserved {
		accounts = append(accounts, a)
	}
	n.mu.Unlock()
	sort.Strings(accounts)
	for _, a := range accounts {
		n.sender.Reconcile(a)
	}
	if err := n.sender.Close(); err != nil {
		n.log.Error("closing the connection to the server failed", err)
	}
}
