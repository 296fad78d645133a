// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/server"

	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

// serverConn is what go-imap's server hands to GetMailbox: a backend.Conn
// that also has the session's Context.
type serverConn interface {
	backend.Conn
	Context() *server.Context
}

// updateConn is the connection the inner mailbox sends its updates to. It
// forwards every update unchanged and notes when the store announced new
// messages (EXISTS), so that the session can send their FETCH afterwards.
// SendUpdate runs with the store's handle lock held (go-imap-mess): it must
// not call back into the mailbox, only queue.
type updateConn struct {
	backend.Conn
	session *registry.Session
}

func (c *updateConn) SendUpdate(upd backend.Update) error {
	err := c.Conn.SendUpdate(upd)
	switch u := upd.(type) {
	case *backend.MailboxUpdate:
		if u.MailboxStatus == nil {
			break
		}
		if _, ok := u.MailboxStatus.Items[imap.StatusMessages]; ok {
			c.session.StoreUpdate("EXISTS")
			c.session.NewMessages()
		}
	case *backend.ExpungeUpdate:
		c.session.StoreUpdate("EXPUNGE")
	case *backend.MessageUpdate:
		c.session.StoreUpdate("FETCH")
	}
	return err
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
	select {
	case o.responses <- rawResponse(buf):
		return nil
	case <-o.loggedOut:
		return registry.ErrClosed
	case <-o.stop:
		return registry.ErrClosed
	}
}

func (o *connOut) LoggedOut() <-chan struct{} { return o.loggedOut }

// FetchNew returns FETCH lines for the messages of the selected mailbox the
// store has announced since the last call (registry.Fetcher). It reads
// through the inner mailbox, so the sequence numbers are the ones the client
// was given; messages not yet announced are not included.
func (m *Mailbox) FetchNew(items mapping.FetchItems) (lines [][]byte, err error) {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()

	var seq imap.SeqSet
	seq.AddRange(m.nextUID, 0) // nextUID:*
	ch := make(chan *imap.Message, 16)
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("hooks: panic in ListMessages: %v\n%s", p, debug.Stack())
			}
		}()
		done <- m.inner.ListMessages(true, &seq, items.Request(), ch)
	}()
	next := m.nextUID
	for msg := range ch {
		// "n:*" also matches the last message when n is above every UID.
		if msg.Uid < m.nextUID {
			continue
		}
		lines = append(lines, mapping.FetchLine(msg.SeqNum, mapping.FetchDataOf(msg), items))
		if msg.Uid >= next {
			next = msg.Uid + 1
		}
	}
	if err := <-done; err != nil {
		return lines, fmt.Errorf("hooks: fetch new messages: %w", err)
	}
	m.nextUID = next
	return lines, nil
}

// mailboxKey identifies a mailbox name: INBOX is case-insensitive.
func mailboxKey(name string) string {
	if mapping.IsInbox(name) {
		return "INBOX"
	}
	return name
}

// listAll returns the user's mailboxes by key.
func (u *User) listAll() (map[string]imap.MailboxInfo, error) {
	infos, err := u.inner.ListMailboxes(false)
	if err != nil {
		return nil, err
	}
	out := make(map[string]imap.MailboxInfo, len(infos))
	for _, info := range infos {
		out[mailboxKey(info.Name)] = info
	}
	return out, nil
}

// sortedInfos returns the mailboxes in name order, so that parents come
// before their children in the events.
func sortedInfos(m map[string]imap.MailboxInfo) []imap.MailboxInfo {
	out := make([]imap.MailboxInfo, 0, len(m))
	for _, info := range m {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// childSuffix reports whether name is from or one of its descendants, and
// the part of name after from.
func childSuffix(name, from, delim string) (string, bool) {
	if mailboxKey(name) == mailboxKey(from) {
		return "", true
	}
	if delim != "" && len(name) > len(from)+len(delim) && name[:len(from)+len(delim)] == from+delim {
		return name[len(from):], true
	}
	return "", false
}

// listAttrs returns the attributes a LIST line carries for a mailbox
// (\Subscribed is the subscription event's to add).
func listAttrs(attrs []string) []string {
	out := make([]string, 0, len(attrs))
	for _, a := range attrs {
		if !strings.EqualFold(a, mapping.AttrSubscribed) {
			out = append(out, a)
		}
	}
	return out
}
