// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"sync"
	"time"

	"github.com/emersion/go-imap/backend"
)

// DefaultStallTimeout is how long, unless the module's stall_timeout
// directive says otherwise, a client's connection may leave one of the
// store's updates unwritten (its socket full: the client does not read)
// before the module disconnects the client. go-imap-mess writes the
// selected mailbox's updates while it holds the session's handle lock,
// which every APPEND, COPY, MOVE, STORE and delivery into that mailbox
// needs; go-imap-sql takes it inside its SQL transaction, and maddy's
// shutdown waits for them. The module's own lines only ever block the
// session's own goroutine (its queue overflows; it is resynchronised when
// it reads again), so they need no such bound.
const DefaultStallTimeout = 2 * time.Second

// stallGuard disconnects the client of one connection once it has
// stalled.
type stallGuard struct {
	conn    backend.Conn
	timeout time.Duration
	once    sync.Once
}

// deadliner is the part of go-imap's server connection (it embeds the
// net.Conn) that ends blocked I/O.
type deadliner interface{ SetDeadline(time.Time) error }

// kick makes every blocked read and write of the connection fail now: the
// connection's writer returns (and with it whoever waits for it, the
// store's SendUpdate included), and go-imap ends the connection as after
// any I/O error. It may be called from any goroutine, more than once.
func (g *stallGuard) kick() {
	if g == nil {
		return
	}
	g.once.Do(func() {
		if d, ok := g.conn.(deadliner); ok {
			d.SetDeadline(time.Unix(1, 0))
		}
	})
}
