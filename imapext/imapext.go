// SPDX-License-Identifier: GPL-3.0-or-later

// Package imapext holds the go-imap v1 server extensions storage.notify
// adds to maddy's IMAP endpoint, through the custom build's door
// (internal/custombuild, docs/maddy-changes.md), which enables them before
// maddy's own COMPRESS extension:
//
//   - NOTIFY (RFC 5465): the command, parsed by notifycmd and applied to
//     the session by the storage's user (Notifier); advertised once the
//     client has logged in.
//   - COMPRESS (RFC 4978), wrapped: the module's lines are held back while
//     the connection's stream changes, so that none goes out uncompressed
//     after COMPRESS's tagged OK.
//
// Of this module, imapext depends on mapping, notifycmd and event only
// (imports_test.go holds it): it must not import hooks, registry or the
// module root; the user reached through the connection's context is the
// storage's, seen through Notifier.
package imapext

import (
	"errors"

	"github.com/emersion/go-imap"
	compress "github.com/emersion/go-imap-compress"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"

	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/notifycmd"
)

// Capability is the NOTIFY capability name.
const Capability = "NOTIFY"

// Notifier is what the NOTIFY and COMPRESS handlers need of the logged-in
// user (server.Context.User): storage.notify's decorated user. Both are
// called from the connection's command goroutine.
type Notifier interface {
	// SetNotify applies NOTIFY SET or NOTIFY NONE (the zero Interest) to
	// the session on conn; with in.Status it writes the STATUS lines the
	// request asks for before it returns.
	SetNotify(conn backend.Conn, in mapping.Interest) error
	// HoldPushes keeps the module's lines back until release is called.
	HoldPushes() (release func())
}

// errUnavailable answers NOTIFY for a user that is not storage.notify's.
var errUnavailable = errors.New("NOTIFY is not available")

// Extensions returns the extensions to enable, in order.
func Extensions() []server.Extension {
	return []server.Extension{notifyExt{}, compressExt{inner: compress.NewExtension()}}
}

// notifyExt is the NOTIFY extension.
type notifyExt struct{}

// Capabilities advertises NOTIFY after login (RFC 5465 section 3: the
// command is valid in authenticated and selected state).
func (notifyExt) Capabilities(c server.Conn) []string {
	if c.Context().State&imap.AuthenticatedState != 0 {
		return []string{Capability}
	}
	return nil
}

// Command returns the NOTIFY handler.
func (notifyExt) Command(name string) server.HandlerFactory {
	if name != "NOTIFY" {
		return nil
	}
	return func() server.Handler { return &notifyHandler{} }
}

// notifyHandler is one NOTIFY command.
type notifyHandler struct {
	in  mapping.Interest
	err *notifycmd.Error
}

// Parse parses the arguments. A syntax error or a broken rule is returned
// here, which go-imap writes as "tag BAD <text>"; a refusal with a
// response code (NO [BADEVENT ...]) waits for Handle, which can carry it.
func (h *notifyHandler) Parse(fields []interface{}) error {
	in, err := notifycmd.Parse(fields)
	if err != nil {
		var e *notifycmd.Error
		if !errors.As(err, &e) {
			return err
		}
		if e.Type == imap.StatusRespBad {
			return e
		}
		h.err = e
		return nil
	}
	h.in = in
	return nil
}

// Handle applies the request to the session.
func (h *notifyHandler) Handle(conn server.Conn) error {
	ctx := conn.Context()
	if ctx.State&imap.AuthenticatedState == 0 {
		return server.ErrNotAuthenticated
	}
	if h.err != nil {
		return &imap.ErrStatusResp{Resp: h.err.StatusResp()}
	}
	n, ok := ctx.User.(Notifier)
	if !ok {
		return errUnavailable
	}
	return n.SetNotify(conn, h.in)
}

// compressExt wraps maddy's COMPRESS extension. It adds no capability
// (maddy's advertises COMPRESS=DEFLATE) and answers the command with the
// inner handler, the module's lines held back from before the command's
// tagged OK until the connection is compressed.
type compressExt struct {
	inner server.Extension
}

func (compressExt) Capabilities(server.Conn) []string { return nil }

func (e compressExt) Command(name string) server.HandlerFactory {
	inner := e.inner.Command(name)
	if inner == nil {
		return nil
	}
	return func() server.Handler { return &compressHandler{Handler: inner()} }
}

// compressHandler is one COMPRESS command.
type compressHandler struct {
	server.Handler
	release func()
}

// Handle holds the module's lines back (a write under way completes
// first) and runs the inner handler; go-imap then writes the tagged OK and
// calls Upgrade.
func (h *compressHandler) Handle(conn server.Conn) error {
	h.release = func() {}
	if n, ok := conn.Context().User.(Notifier); ok {
		h.release = n.HoldPushes()
	}
	err := h.Handler.Handle(conn)
	if err != nil {
		h.release()
	}
	return err
}

// Upgrade compresses the connection, then lets the module's lines go.
func (h *compressHandler) Upgrade(conn server.Conn) error {
	defer h.release()
	up, ok := h.Handler.(server.Upgrader)
	if !ok {
		return nil
	}
	return up.Upgrade(conn)
}
