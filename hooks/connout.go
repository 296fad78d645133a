// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"

	"github.com/maddy-notify/maddy-notify/registry"
)

// serverConn is what go-imap's server hands to GetMailbox: a backend.Conn
// that also has the session's Context.
type serverConn interface {
	backend.Conn
	Context() *server.Context
}

// rawResponse is a complete untagged response (or several), written as is.
type rawResponse []byte

func (r rawResponse) WriteTo(w *imap.Writer) error {
	_, err := w.Write(r)
	return err
}

// connOut writes a session's notifications through go-imap's response
// channel, which the connection's writer drains between responses, so a
// notification never lands inside another response. It gives up when the
// client is gone or the module stops, instead of blocking forever.
type connOut struct {
	responses chan<- imap.WriterTo
	loggedOut <-chan struct{}
	stop      <-chan struct{}

	// handing is held by Write while it hands a response over; hold takes
	// it to wait for that. held, when not nil, is closed once the hold is
	// released: Write waits for that before it hands anything over.
	handing sync.Mutex
	holdMu  sync.Mutex
	held    chan struct{}
}

// holdLimit bounds a hold (HoldPushes) whose release never comes, as when
// go-imap does not call the COMPRESS upgrade after a failed write of its
// OK: the session's lines then flow again.
const holdLimit = 10 * time.Second

// hold keeps Write from handing anything over until release is called,
// and returns once a Write that is handing a response over is done.
func (o *connOut) hold() (release func()) {
	ch := make(chan struct{})
	o.holdMu.Lock()
	o.held = ch
	o.holdMu.Unlock()
	o.handing.Lock()
	o.handing.Unlock() // the write under way is done
	var once sync.Once
	release = func() {
		once.Do(func() {
			o.holdMu.Lock()
			if o.held == ch {
				o.held = nil
			}
			o.holdMu.Unlock()
			close(ch)
		})
	}
	time.AfterFunc(holdLimit, release)
	return release
}

// heldBy returns the channel of the hold in force, nil when none.
func (o *connOut) heldBy() chan struct{} {
	o.holdMu.Lock()
	defer o.holdMu.Unlock()
	return o.held
}

func newConnOut(ctx *server.Context, stop <-chan struct{}) *connOut {
	return &connOut{responses: ctx.Responses, loggedOut: ctx.LoggedOut, stop: stop}
}

func (o *connOut) Write(lines [][]byte) error {
	n := 0
	for _, l := range lines {
		n += len(l)
	}
	buf := make([]byte, 0, n)
	for _, l := range lines {
		buf = append(buf, l...)
	}
	for {
		if h := o.heldBy(); h != nil {
			select {
			case <-h:
				continue
			case <-o.loggedOut:
				return registry.ErrClosed
			case <-o.stop:
				return registry.ErrClosed
			}
		}
		o.handing.Lock()
		if o.heldBy() != nil { // a hold began meanwhile
			o.handing.Unlock()
			continue
		}
		var err error
		select {
		case o.responses <- rawResponse(buf):
		case <-o.loggedOut:
			err = registry.ErrClosed
		case <-o.stop:
			err = registry.ErrClosed
		}
		o.handing.Unlock()
		return err
	}
}

func (o *connOut) LoggedOut() <-chan struct{} { return o.loggedOut }
