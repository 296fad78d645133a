// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// BatchStatus reads the STATUS items of every mailbox of the account user
// (a handle the registry's Opener returned) at once: per mailbox name, the
// values user.Status(name, items) would report. It is called from the
// account's worker or the goroutine that registers its first session, never
// concurrently for one user.
type BatchStatus func(user backend.User, items []imap.StatusItem) (map[string]*imap.MailboxStatus, error)

// A pass reads its mailboxes with one BatchStatus instead of one Status
// each when they are at least batchMin and at least 1/batchShare of the
// account's mailboxes: the batch reads every mailbox of the account, each
// at a small fraction of what one Status query costs.
const (
	batchMin   = 8
	batchShare = 16
)

// SetBatchStatus makes the registry read the STATUS of many mailboxes at
// once through f (learning an account, reconciling it) instead of one
// Status query each. Call it before the first Register; nil turns it off.
func (r *Registry) SetBatchStatus(f BatchStatus) { r.batch = f }

// batchStatuses returns the STATUS of every mailbox of the account by
// mailbox key, when a BatchStatus is set and n mailboxes are to be read
// (batchMin, batchShare); nil otherwise (or on error, logged): the caller
// then queries each mailbox. Only the account's worker, or the goroutine
// that learns a new account, calls it.
func (a *account) batchStatuses(r *Registry, n int) map[string]mapping.Status {
	if r.batch == nil || n < batchMin {
		return nil
	}
	r.mu.Lock()
	total := len(a.names)
	r.mu.Unlock()
	if n*batchShare < total {
		return nil
	}
	r.metrics.StatusQuery()
	all, err := r.batch(a.user, r.policy.StatusItems.Request())
	if err != nil {
		r.log.Error("batch STATUS failed; querying each mailbox", err, "account", a.name)
		return nil
	}
	out := make(map[string]mapping.Status, len(all))
	for name, st := range all {
		out[mapping.MailboxKey(name)] = mapping.StatusOf(st)
	}
	return out
}
