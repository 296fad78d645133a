// SPDX-License-Identifier: GPL-3.0-or-later

package registry

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// This file holds the account's mailbox list (account.names), the mailbox
// sets the sessions have been told (Session.names), and the lock that
// orders one account's hierarchy changes (LockHierarchy).

// ListMailboxes lists every mailbox of user (ListMailboxes(false)) with
// \Subscribed among the attributes of each one the user has subscribed,
// as the set of mailbox names and NOTIFY's subscribed filter read them:
// the store's full list does not say which mailboxes are subscribed
// (go-imap-sql lists subscriptions only with ListMailboxes(true)).
func ListMailboxes(user backend.User) ([]imap.MailboxInfo, error) {
	infos, err := user.ListMailboxes(false)
	if err != nil {
		return nil, err
	}
	subs, err := user.ListMailboxes(true)
	if err != nil {
		return nil, err
	}
	subscribed := make(map[string]bool, len(subs))
	for _, info := range subs {
		subscribed[mapping.MailboxKey(info.Name)] = true
	}
	for i, info := range infos {
		infos[i].Attributes = mapping.SubscriptionAttrs(info.Attributes, subscribed[mapping.MailboxKey(info.Name)])
	}
	return infos, nil
}

// MailboxSet returns infos by mailbox key.
func MailboxSet(infos []imap.MailboxInfo) map[string]imap.MailboxInfo {
	out := make(map[string]imap.MailboxInfo, len(infos))
	for _, info := range infos {
		out[mapping.MailboxKey(info.Name)] = info
	}
	return out
}

// DiffMailboxes compares two mailbox sets (by key, as MailboxSet returns
// them): created are the mailboxes of after that before lacks, deleted
// those of before that after lacks, each in name order (parents before
// their children).
func DiffMailboxes(before, after map[string]imap.MailboxInfo) (created, deleted []imap.MailboxInfo) {
	for key, info := range after {
		if _, ok := before[key]; !ok {
			created = append(created, info)
		}
	}
	for key, info := range before {
		if _, ok := after[key]; !ok {
			deleted = append(deleted, info)
		}
	}
	byName := func(infos []imap.MailboxInfo) {
		sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	}
	byName(created)
	byName(deleted)
	return created, deleted
}

// diffEvents are the mailbox events that turn the set before into after.
func diffEvents(acct string, before, after map[string]imap.MailboxInfo) []event.Event {
	created, deleted := DiffMailboxes(before, after)
	evs := make([]event.Event, 0, len(created)+len(deleted))
	for _, info := range created {
		evs = append(evs, event.Event{Kind: event.MailboxCreate, Account: acct, Mailbox: info.Name,
			Delimiter: info.Delimiter, Attrs: mapping.WithoutSubscribed(info.Attributes)})
	}
	for _, info := range deleted {
		evs = append(evs, event.Event{Kind: event.MailboxDelete, Account: acct, Mailbox: info.Name, Delimiter: info.Delimiter})
	}
	return evs
}

// syncNames reads the account's mailbox list. With tell set it tells the
// sessions what was created or deleted since the list was last known, as
// LIST lines from no session (origin 0).
func (a *account) syncNames(r *Registry, tell bool) {
	var now map[string]imap.MailboxInfo
	for attempt := 0; ; attempt++ {
		r.mu.Lock()
		gen := a.namesGen
		r.mu.Unlock()
		infos, err := ListMailboxes(a.user)
		if err != nil {
			r.log.Error("cannot list mailboxes", err, "account", a.name)
			return
		}
		now = MailboxSet(infos)
		r.mu.Lock()
		// A mailbox event applied while the store was read may be newer
		// than the list read: comparing them would tell the client its
		// new mailbox is gone. Read again (a few times; a burst of
		// changes ends).
		if a.namesGen == gen || attempt == 3 {
			break
		}
		r.mu.Unlock()
	}
	defer r.mu.Unlock()
	before := a.names
	a.names, a.namesShared = now, false
	a.namesGen++
	if !tell || before == nil {
		return
	}
	for _, ev := range diffEvents(a.name, before, now) {
		if !r.policy.Events.Has(ev.Kind) {
			continue
		}
		if ev.Kind == event.MailboxDelete {
			a.forgetLocked(mapping.MailboxKey(ev.Mailbox))
		}
		for _, s := range a.sessions {
			s.enqueue(item{ev: ev, at: time.Now()})
		}
	}
}

// resync resynchronises s by state after its queue overflowed: it returns
// the mailbox events that turn the mailbox set s has been told into the
// account's (a RENAME s missed comes as the old name's deletion and the new
// name's creation) and the keys of every mailbox whose STATUS the account
// holds, for s to compare with what its client was told.
func (r *Registry) resync(s *Session) (evs []event.Event, keys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Under the same hold of mu as the account's list is read: every
	// mailbox event published after it is queued, every one before it is
	// in the difference.
	s.mu.Lock()
	s.overflow = false
	known := s.names
	s.mu.Unlock()
	a := r.accounts[s.account]
	if a == nil || a.sessions[s.id] != s {
		return nil, nil
	}
	for key := range a.status {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	if a.names == nil || known == nil {
		return nil, keys
	}
	return diffEvents(a.name, known, a.names), keys
}

// shareNames makes s share the account's mailbox list again once what it
// has been told equals it (usually as soon as it has been handed the
// mailbox events): a copy per session only while they differ.
func (r *Registry) shareNames(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.accounts[s.account]
	if a == nil || a.sessions[s.id] != s || a.names == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.namesOwn && sameNames(s.names, a.names) {
		s.names, s.namesGen, s.namesOwn = a.names, a.namesGen, false
		a.namesShared = true
	}
}

// sameNames reports whether two mailbox sets hold the same mailboxes. Only
// what a session's set is used for counts (resync): the keys, and the name
// and delimiter of a LIST line for a deleted mailbox.
func sameNames(x, y map[string]imap.MailboxInfo) bool {
	if len(x) != len(y) {
		return false
	}
	for key, a := range x {
		b, ok := y[key]
		if !ok || a.Name != b.Name || a.Delimiter != b.Delimiter {
			return false
		}
	}
	return true
}

func cloneNames(m map[string]imap.MailboxInfo) map[string]imap.MailboxInfo {
	if m == nil {
		return nil
	}
	out := make(map[string]imap.MailboxInfo, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// applyNameEvent applies a mailbox event to a mailbox set.
//
// A mailbox's attributes in the set say \Subscribed as the store's LIST
// does (ev.Subscribed), so that the set tells NOTIFY's subscribed filter
// which mailboxes are subscribed (subscribedIn).
//
// With children, a rename moves the mailbox's children with it, as the
// store's RENAME does (the children's own events then find them moved);
// without, it moves the named mailbox alone.
func applyNameEvent(names map[string]imap.MailboxInfo, ev event.Event, children bool) {
	attrs := mapping.SubscriptionAttrs(ev.Attrs, ev.Subscribed)
	switch ev.Kind {
	case event.MailboxCreate, event.SubscriptionChange:
		names[mapping.MailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: attrs}
	case event.MailboxDelete:
		delete(names, mapping.MailboxKey(ev.Mailbox))
	case event.MailboxRename:
		if !mapping.IsInbox(ev.OldMailbox) {
			delete(names, mapping.MailboxKey(ev.OldMailbox))
			if children && ev.Delimiter != "" {
				prefix := mapping.MailboxKey(ev.OldMailbox) + ev.Delimiter
				var moved []imap.MailboxInfo
				for key, info := range names {
					if strings.HasPrefix(key, prefix) {
						delete(names, key)
						info.Name = ev.Mailbox + info.Name[len(ev.OldMailbox):]
						moved = append(moved, info)
					}
				}
				for _, info := range moved {
					names[mapping.MailboxKey(info.Name)] = info
				}
			}
		}
		names[mapping.MailboxKey(ev.Mailbox)] = imap.MailboxInfo{Name: ev.Mailbox, Delimiter: ev.Delimiter, Attributes: attrs}
	}
}

// subscribedIn reports whether names (nil: unknown) says mailbox key is
// subscribed, and its delimiter.
func subscribedIn(names map[string]imap.MailboxInfo, key string) (subscribed bool, delimiter string) {
	info, ok := names[key]
	if !ok {
		return false, ""
	}
	return mapping.IsSubscribed(info.Attributes), info.Delimiter
}

// hierarchyLock serialises one account's mailbox hierarchy changes.
type hierarchyLock struct {
	mu    sync.Mutex
	users int
}

// LockHierarchy serialises the mailbox hierarchy changes of acct made
// through this module instance (CREATE, DELETE, RENAME, SUBSCRIBE): the
// caller lists the mailboxes, changes them, lists them again and publishes
// the difference before it calls the returned unlock, so that the events
// of changes made by different sessions at the same time are published in
// the order the store made them. It may be called from any goroutine.
func (r *Registry) LockHierarchy(acct string) (unlock func()) {
	r.hierMu.Lock()
	if r.hier == nil {
		r.hier = map[string]*hierarchyLock{}
	}
	l := r.hier[acct]
	if l == nil {
		l = &hierarchyLock{}
		r.hier[acct] = l
	}
	l.users++
	r.hierMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.hierMu.Lock()
		if l.users--; l.users == 0 {
			delete(r.hier, acct)
		}
		r.hierMu.Unlock()
	}
}
