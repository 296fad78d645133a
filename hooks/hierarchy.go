// SPDX-License-Identifier: GPL-3.0-or-later

package hooks

import (
	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/registry"
)

type rename struct{ from, to string }

// hierarchyChange runs op and publishes the mailbox events it caused,
// found by comparing the mailbox list before and after (the store may
// create parents or remove children on its own).
func (u *User) hierarchyChange(op func() error, ren *rename) error {
	if u.pub == nil {
		return op()
	}
	// One account's changes are listed, made, listed again and published
	// one at a time: the events of two sessions' changes then reach the
	// others in the order the store made the changes. (maddy's CLI has no
	// registry and one command at a time.)
	if u.reg != nil {
		defer u.reg.LockHierarchy(u.inner.Username())()
	}
	before, err := u.listAll()
	if err != nil {
		// No events, but the client's command is not ours to fail.
		u.log.Error("cannot list mailboxes before a mailbox change; no LIST lines for it", err, "account", u.inner.Username())
		return op()
	}
	if err := op(); err != nil {
		return err
	}
	after, err := u.listAll()
	if err != nil {
		u.log.Error("cannot list mailboxes after a mailbox change; no LIST lines for it", err, "account", u.inner.Username())
		return nil
	}
	created, deleted := registry.DiffMailboxes(before, after)
	renamed := map[string]bool{}
	if ren != nil && mapping.IsInbox(ren.from) {
		u.publish(event.Event{Kind: event.MessageExpunge, Mailbox: "INBOX"})
	} else if ren != nil {
		for _, old := range deleted {
			suffix, ok := childSuffix(old.Name, ren.from, old.Delimiter)
			if !ok {
				continue
			}
			nw, ok := after[mapping.MailboxKey(ren.to+suffix)]
			if !ok {
				continue
			}
			renamed[mapping.MailboxKey(old.Name)], renamed[mapping.MailboxKey(nw.Name)] = true, true
			u.publish(event.Event{Kind: event.MailboxRename, Mailbox: nw.Name, OldMailbox: old.Name,
				Delimiter: nw.Delimiter, Attrs: mapping.WithoutSubscribed(nw.Attributes), Subscribed: mapping.IsSubscribed(nw.Attributes)})
		}
	}
	for _, info := range created {
		if !renamed[mapping.MailboxKey(info.Name)] {
			u.publish(event.Event{Kind: event.MailboxCreate, Mailbox: info.Name,
				Delimiter: info.Delimiter, Attrs: mapping.WithoutSubscribed(info.Attributes), Subscribed: mapping.IsSubscribed(info.Attributes)})
		}
	}
	for _, info := range deleted {
		if !renamed[mapping.MailboxKey(info.Name)] {
			u.publish(event.Event{Kind: event.MailboxDelete, Mailbox: info.Name, Delimiter: info.Delimiter})
		}
	}
	return nil
}

// listAll returns the user's mailboxes by key, each subscribed one with
// \Subscribed among its attributes (registry.ListMailboxes): the store
// subscribes a mailbox it creates, and the events say so.
func (u *User) listAll() (map[string]imap.MailboxInfo, error) {
	infos, err := registry.ListMailboxes(u.inner)
	if err != nil {
		return nil, err
	}
	return registry.MailboxSet(infos), nil
}

// childSuffix reports whether name is from or one of its descendants, and
// the part of name after from.
func childSuffix(name, from, delim string) (string, bool) {
	if mapping.MailboxKey(name) == mapping.MailboxKey(from) {
		return "", true
	}
	if delim != "" && len(name) > len(from)+len(delim) && name[:len(from)+len(delim)] == from+delim {
		return name[len(from):], true
	}
	return "", false
}
