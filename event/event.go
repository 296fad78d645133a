// SPDX-License-Identifier: GPL-3.0-or-later

// Package event defines the value that flows one way through storage.notify:
//
//	storage call → hooks → event → bus → session queue → mapping → wire
//
// An Event is plain data: it says what changed in an account's message store,
// not who must be told or how. Producers (package hooks, the brokers that
// carry events between instances) build and validate it; consumers (the
// session registry, package mapping) only read it.
//
// Event values are immutable once published: a producer must not modify an
// event, or the slices it refers to, after handing it on, and consumers must
// not modify what they receive (use Clone to get a private copy). Under that
// rule an Event may be read from any number of goroutines at once.
//
// Package event imports only the standard library, so nothing of this
// module (imports_test.go and event_test.go's TestImports hold it), and
// does no I/O.
package event

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind is the kind of a message store change. The names follow RFC 5423
// (Internet Message Store Events) where it has one; FlagChange stands for
// RFC 5423's FlagsSet and FlagsClear, SubscriptionChange for MailboxSubscribe
// and MailboxUnSubscribe (the new state is in Event.Subscribed).
//
// The zero Kind is not a valid kind.
type Kind uint8

// The kinds of events. Their String forms are the constant names.
const (
	// MessageNew: a message was delivered (SMTP, LMTP, imap_filter routing).
	MessageNew Kind = iota + 1
	// MessageAppend: a message was added by a client (APPEND, COPY or
	// MOVE into the mailbox).
	MessageAppend
	// MessageExpunge: messages were removed (EXPUNGE, UID EXPUNGE, CLOSE,
	// MOVE out of the mailbox).
	MessageExpunge
	// FlagChange: message flags were set or cleared (STORE).
	FlagChange
	// MailboxCreate: a mailbox was created.
	MailboxCreate
	// MailboxDelete: a mailbox was deleted.
	MailboxDelete
	// MailboxRename: a mailbox was renamed from OldMailbox to Mailbox.
	MailboxRename
	// SubscriptionChange: a mailbox was subscribed or unsubscribed.
	SubscriptionChange

	maxKind = SubscriptionChange
)

var kindNames = [...]string{
	MessageNew:         "MessageNew",
	MessageAppend:      "MessageAppend",
	MessageExpunge:     "MessageExpunge",
	FlagChange:         "FlagChange",
	MailboxCreate:      "MailboxCreate",
	MailboxDelete:      "MailboxDelete",
	MailboxRename:      "MailboxRename",
	SubscriptionChange: "SubscriptionChange",
}

// Kinds returns every valid kind, in declaration order. The slice is new on
// every call; the caller may keep and modify it.
func Kinds() []Kind {
	ks := make([]Kind, 0, maxKind)
	for k := Kind(1); k <= maxKind; k++ {
		ks = append(ks, k)
	}
	return ks
}

// Valid reports whether k is one of the declared kinds.
func (k Kind) Valid() bool {
	return k >= 1 && k <= maxKind
}

// String returns the kind's name, exactly as ParseKind accepts it, or
// "Kind(n)" for an invalid kind.
func (k Kind) String() string {
	if !k.Valid() {
		return fmt.Sprintf("Kind(%d)", uint8(k))
	}
	return kindNames[k]
}

// IsMessage reports whether k is about messages in one mailbox (MessageNew,
// MessageAppend, MessageExpunge, FlagChange).
func (k Kind) IsMessage() bool {
	return k >= MessageNew && k <= FlagChange
}

// IsMailbox reports whether k is about a mailbox itself (MailboxCreate,
// MailboxDelete, MailboxRename, SubscriptionChange).
func (k Kind) IsMailbox() bool {
	return k >= MailboxCreate && k <= SubscriptionChange
}

// ParseKind returns the kind named s. Names are matched without regard to
// case ("messagenew" is MessageNew), so that configuration files may use
// either spelling; String always returns the canonical one.
func ParseKind(s string) (Kind, error) {
	for k := Kind(1); k <= maxKind; k++ {
		if strings.EqualFold(s, kindNames[k]) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("event: unknown event kind %q (known: %s)", s, strings.Join(kindNames[1:], ", "))
}

// MarshalText encodes k as its name, so that JSON and other text encodings
// (a broker's payload) carry "MessageNew" rather than a number that would
// change meaning if kinds were reordered. An invalid kind is an error.
func (k Kind) MarshalText() ([]byte, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("event: cannot encode invalid kind %d", uint8(k))
	}
	return []byte(kindNames[k]), nil
}

// UnmarshalText decodes a name as ParseKind does.
func (k *Kind) UnmarshalText(text []byte) error {
	parsed, err := ParseKind(string(text))
	if err != nil {
		return err
	}
	*k = parsed
	return nil
}

// Event is one change in an account's message store.
type Event struct {
	// Kind says what happened.
	Kind Kind
	// Account is the storage account name (as the store names it, after
	// maddy's normalisation). Only sessions of this account receive the event.
	Account string
	// Mailbox is the affected mailbox, as a UTF-8 name in the store's own
	// spelling (go-imap-sql stores decoded names, not modified UTF-7). For
	// MailboxRename it is the new name.
	Mailbox string
	// OldMailbox is the previous name for MailboxRename; empty otherwise.
	OldMailbox string
	// Delimiter is the store's hierarchy delimiter; "" means the store has
	// none (NIL on the wire).
	Delimiter string
	// Attrs are the mailbox attributes (e.g. \HasNoChildren, \Sent) for
	// MailboxCreate, MailboxRename and SubscriptionChange, when known.
	Attrs []string
	// Subscribed is the new subscription state for SubscriptionChange;
	// for MailboxCreate and MailboxRename, whether the (new) mailbox is
	// subscribed (NOTIFY's subscribed filter).
	Subscribed bool
	// Origin is the opaque id of the IMAP session that caused the change, or
	// 0 when no session did (SMTP delivery, CLI, another instance). Session
	// ids are never 0.
	Origin uint64
	// Time is when the store change completed, for latency metrics.
	Time time.Time
}

// Validate checks that e is well-formed: a valid kind, a non-empty account,
// a mailbox name, an old name for MailboxRename and only then, a delimiter of
// at most one 7-bit character and non-empty attributes. Names must be valid
// UTF-8 without NUL, CR or LF (IMAP cannot carry those; CheckMailboxName).
//
// Producers call Validate before publishing; a broker calls it on what it
// receives from another instance. It does not check that the mailbox exists.
func (e Event) Validate() error {
	if !e.Kind.Valid() {
		return fmt.Errorf("event: invalid kind %d", uint8(e.Kind))
	}
	if e.Account == "" {
		return fmt.Errorf("event: %v without account", e.Kind)
	}
	if err := checkName("mailbox", e.Mailbox); err != nil {
		return fmt.Errorf("event: %v: %w", e.Kind, err)
	}
	if e.Kind == MailboxRename {
		if err := checkName("old mailbox", e.OldMailbox); err != nil {
			return fmt.Errorf("event: %v: %w", e.Kind, err)
		}
	} else if e.OldMailbox != "" {
		return fmt.Errorf("event: %v with old mailbox %q (only %v has one)", e.Kind, e.OldMailbox, MailboxRename)
	}
	if len(e.Delimiter) > 1 || (e.Delimiter != "" && (e.Delimiter[0] == 0 || e.Delimiter[0] >= utf8.RuneSelf ||
		e.Delimiter[0] == '\r' || e.Delimiter[0] == '\n')) {
		return fmt.Errorf("event: %v: delimiter %q is not one 7-bit character", e.Kind, e.Delimiter)
	}
	for _, a := range e.Attrs {
		if a == "" {
			return fmt.Errorf("event: %v: empty mailbox attribute", e.Kind)
		}
	}
	return nil
}

// errEmptyName is wrapped by Validate and CheckMailboxName for a missing
// mailbox name.
var errEmptyName = errors.New("empty name")

// CheckMailboxName reports whether name is a mailbox name IMAP can carry:
// not empty, valid UTF-8, and without NUL, CR or LF (RFC 3501 forbids them
// in every string form but literals, and modified UTF-7 would hide them
// from clients that compare names byte by byte). It returns nil for such a
// name, and otherwise an error whose message begins with "event: " (and
// quotes the name, unless it is empty).
//
// It is the check Validate applies to Mailbox and, for MailboxRename, to
// OldMailbox: those names of a valid event always pass it.
func CheckMailboxName(name string) error {
	if err := checkName("mailbox name", name); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	return nil
}

// checkName is CheckMailboxName's check, its errors naming the name as
// what (for Validate: "mailbox" or "old mailbox").
func checkName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s: %w", what, errEmptyName)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%s %q is not valid UTF-8", what, name)
	}
	if strings.ContainsAny(name, "\x00\r\n") {
		return fmt.Errorf("%s %q contains NUL, CR or LF", what, name)
	}
	return nil
}

// Clone returns a copy of e that shares no slices with it.
func (e Event) Clone() Event {
	c := e
	c.Attrs = cloneSlice(e.Attrs)
	return c
}

func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// String returns a short description for logs, e.g.
// `MessageNew account="u" mailbox="INBOX" origin=0`.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v account=%q mailbox=%q", e.Kind, e.Account, e.Mailbox)
	if e.OldMailbox != "" {
		fmt.Fprintf(&b, " old=%q", e.OldMailbox)
	}
	if e.Kind == SubscriptionChange {
		fmt.Fprintf(&b, " subscribed=%v", e.Subscribed)
	}
	fmt.Fprintf(&b, " origin=%d", e.Origin)
	return b.String()
}
