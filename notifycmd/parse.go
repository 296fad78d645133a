// SPDX-License-Identifier: GPL-3.0-or-later

// Package notifycmd parses the arguments of the IMAP NOTIFY command (RFC
// 5465) into the mapping.Interest a session then holds, and names the
// errors RFC 5465 wants for a bad request, so that a server handler can
// write the exact tagged line.
//
// The input is what go-imap v1's server (the maddy fork) hands a
// server.Handler's Parse method: the fields after the command name, with
// atoms and quoted strings as string, NIL as nil, literals as imap.Literal
// and parenthesised lists as []interface{}. docs/notify.md describes the
// accepted grammar, the lenient forms and the errors.
//
// notifycmd is pure: no I/O, no locks, no goroutines. It imports only the
// standard library, go-imap v1 (and its utf7) and, of this module, mapping
// and event (purity_test.go holds all of it).
package notifycmd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/utf7"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// Response codes of RFC 5465 section 8.
const (
	// CodeBadEvent names, in a tagged NO, the events the server supports;
	// Parse returns it when the client asked for another one.
	CodeBadEvent imap.StatusRespCode = "BADEVENT"
	// CodeNotificationOverflow is for a server that refuses a NOTIFY as
	// too expensive (tagged NO) or stops notifying (untagged OK); Parse
	// never returns it.
	CodeNotificationOverflow imap.StatusRespCode = "NOTIFICATIONOVERFLOW"
)

// Error is a NOTIFY command the server must refuse, with the response RFC
// 5465 prescribes: a tagged BAD for bad syntax and for broken rules of
// sections 5 and 6.1, a tagged NO [BADEVENT (supported events)] for an event
// the server does not support.
type Error struct {
	// Type is imap.StatusRespBad or imap.StatusRespNo.
	Type imap.StatusRespType
	// Code is "" or CodeBadEvent.
	Code imap.StatusRespCode
	// Args are the response code's arguments: for CodeBadEvent one list,
	// the supported events as atoms.
	Args []interface{}
	// Info is the human-readable text.
	Info string
}

// Error returns Info, so that a BAD returned from a server.Handler's Parse
// is written by go-imap v1 as "tag BAD <Info>".
func (e *Error) Error() string { return e.Info }

// StatusResp returns the tagged response to write, without its tag (the
// server adds it). A handler returns it from Handle as
// &imap.ErrStatusResp{Resp: err.StatusResp()}; go-imap v1 then writes, e.g.,
//
//	a NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] unsupported NOTIFY event: AnnotationChange
func (e *Error) StatusResp() *imap.StatusResp {
	return &imap.StatusResp{Type: e.Type, Code: e.Code, Arguments: e.Args, Info: e.Info}
}

func bad(format string, args ...any) *Error {
	return &Error{Type: imap.StatusRespBad, Info: fmt.Sprintf(format, args...)}
}

// BadEvent returns the NO [BADEVENT (...)] error for the named unsupported
// events: the code lists every event storage.notify supports
// (mapping.SupportedNotifyEvents), the text names those asked for.
func BadEvent(names []string) *Error {
	var list []interface{}
	for _, e := range mapping.SupportedNotifyEvents().Events() {
		list = append(list, imap.RawString(e.String()))
	}
	return &Error{
		Type: imap.StatusRespNo,
		Code: CodeBadEvent,
		Args: []interface{}{list},
		Info: "unsupported NOTIFY event: " + strings.Join(names, " "),
	}
}

// Parse parses the arguments of a NOTIFY command, fields as go-imap v1's
// server reads them after the command name, into the interest the client
// asked for: NOTIFY NONE is the zero Interest. On failure it returns a
// zero Interest and an *Error:
//
//   - BAD for anything the grammar of RFC 5465 section 8 does not allow,
//     with the lenient exceptions of docs/notify.md, and for a request that
//     breaks a rule mapping.Interest.Validate checks;
//   - NO [BADEVENT (...)] when the request is valid but names an event
//     storage.notify does not support (AnnotationChange,
//     MailboxMetadataChange, ServerMetadataChange, or any other atom).
//
// Mailbox names are decoded from modified UTF-7 as the fork does for
// SELECT; names of mailboxes that do not exist are kept (RFC 5465 section
// 6.6: they are ignored, which matching does by itself). Parse reads the
// literals among fields: call it once per command.
func Parse(fields []interface{}) (mapping.Interest, error) {
	in, err := parse(fields)
	if err != nil {
		return mapping.Interest{}, err
	}
	return in, nil
}

func parse(fields []interface{}) (mapping.Interest, *Error) {
	if len(fields) == 0 {
		return mapping.Interest{}, bad("NOTIFY needs SET or NONE")
	}
	word, _ := atom(fields[0])
	switch {
	case strings.EqualFold(word, "NONE"):
		if len(fields) > 1 {
			return mapping.Interest{}, bad("NOTIFY NONE takes no arguments")
		}
		return mapping.Interest{}, nil
	case !strings.EqualFold(word, "SET"):
		return mapping.Interest{}, bad("NOTIFY needs SET or NONE")
	}

	var in mapping.Interest
	rest := fields[1:]
	if len(rest) > 0 && isStatus(rest[0]) {
		in.Status = true
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return mapping.Interest{}, bad("NOTIFY SET needs at least one event group")
	}
	var unsupported []string
	for i, f := range rest {
		g, names, err := parseGroup(f)
		if err != nil {
			err.Info = fmt.Sprintf("NOTIFY SET: event group %d: %s", i+1, err.Info)
			return mapping.Interest{}, err
		}
		in.Groups = append(in.Groups, g)
		for _, n := range names {
			if !contains(unsupported, n) {
				unsupported = append(unsupported, n)
			}
		}
	}
	if err := in.Validate(); err != nil {
		var ie *mapping.InterestError
		if !errors.As(err, &ie) {
			panic(fmt.Sprintf("notifycmd: Validate returned %T: %v", err, err))
		}
		return mapping.Interest{}, bad("NOTIFY SET: event group %d: %s", ie.Group+1, ie.Reason)
	}
	if len(unsupported) > 0 {
		return mapping.Interest{}, BadEvent(unsupported)
	}
	return in, nil
}

// isStatus reports whether f is the status indicator: the atom STATUS, or
// the list (STATUS) that go-imap v2's imapclient writes.
func isStatus(f interface{}) bool {
	if l, ok := f.([]interface{}); ok && len(l) == 1 {
		f = l[0]
	}
	s, ok := atom(f)
	return ok && strings.EqualFold(s, "STATUS")
}

// parseGroup parses one event-group; names are the unsupported events it
// asks for, as the client spelled unknown ones and canonically known ones.
func parseGroup(f interface{}) (mapping.EventGroup, []string, *Error) {
	var g mapping.EventGroup
	l, ok := f.([]interface{})
	if !ok {
		return g, nil, bad("expected a parenthesised event group")
	}
	if len(l) == 0 {
		return g, nil, bad("empty event group")
	}
	pos := 1
	switch first := l[0].(type) {
	case []interface{}:
		// go-imap v2's imapclient writes a list of mailboxes without the
		// "mailboxes" keyword.
		g.Filter.Kind = mapping.FilterMailboxes
		names, err := mailboxList(first)
		if err != nil {
			return g, nil, err
		}
		g.Filter.Mailboxes = names
	default:
		word, _ := atom(first)
		kind, ok := mapping.ParseFilterKind(word)
		if !ok {
			return g, nil, bad("unknown mailbox filter %s", quote(first))
		}
		g.Filter.Kind = kind
		if kind.HasMailboxes() {
			if len(l) < 2 {
				return g, nil, bad("%v needs a mailbox or a list of mailboxes", kind)
			}
			names, err := oneOrMoreMailbox(l[1])
			if err != nil {
				return g, nil, err
			}
			g.Filter.Mailboxes = names
			pos = 2
		}
	}

	if len(l) == pos {
		// No events at all: go-imap v2's imapclient writes a group whose
		// Events are empty so. It can only mean NONE.
		return g, nil, nil
	}
	none := false
	events, ok := l[pos].([]interface{})
	if s, isAtom := atom(l[pos]); isAtom && strings.EqualFold(s, "NONE") {
		none = true
	} else if !ok {
		return g, nil, bad("expected a list of events or NONE, got %s", quote(l[pos]))
	}
	if len(l) > pos+1 {
		return g, nil, bad("unexpected %s after the events", quote(l[pos+1]))
	}
	if none {
		return g, nil, nil
	}
	if len(events) == 0 {
		return g, nil, bad("empty list of events")
	}
	var unsupported []string
	for j := 0; j < len(events); j++ {
		name, ok := atom(events[j])
		if !ok {
			return g, nil, bad("expected an event name, got %s", quote(events[j]))
		}
		e, known := mapping.ParseNotifyEvent(name)
		if !known {
			unsupported = append(unsupported, strconv.QuoteToASCII(name))
			continue
		}
		g.Events |= mapping.NewNotifyEvents(e)
		if !e.Supported() {
			unsupported = append(unsupported, e.String())
		}
		if e != mapping.NotifyMessageNew || j+1 == len(events) {
			continue
		}
		if atts, ok := events[j+1].([]interface{}); ok {
			items, err := fetchAtts(atts)
			if err != nil {
				return g, nil, err
			}
			for _, it := range items {
				if !containsItem(g.FetchAtts, it) {
					g.FetchAtts = append(g.FetchAtts, it)
				}
			}
			j++
		}
	}
	return g, unsupported, nil
}

// oneOrMoreMailbox parses RFC 5465's one-or-more-mailbox: a mailbox or a
// parenthesised list of them.
func oneOrMoreMailbox(f interface{}) ([]string, *Error) {
	if l, ok := f.([]interface{}); ok {
		return mailboxList(l)
	}
	name, err := mailbox(f)
	if err != nil {
		return nil, err
	}
	return []string{name}, nil
}

func mailboxList(l []interface{}) ([]string, *Error) {
	if len(l) == 0 {
		return nil, bad("empty list of mailboxes")
	}
	names := make([]string, 0, len(l))
	for _, f := range l {
		name, err := mailbox(f)
		if err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// mailbox decodes one mailbox name (atom, quoted string or literal, in
// modified UTF-7) as the fork's SELECT does, with INBOX in any case as
// "INBOX".
func mailbox(f interface{}) (string, *Error) {
	var raw string
	switch f := f.(type) {
	case nil:
		raw = "NIL" // go-imap v1 reads the atom NIL as nil; it is a valid astring
	case string:
		raw = f
	case imap.Literal:
		s, err := imap.ParseString(f)
		if err != nil {
			return "", bad("cannot read a mailbox literal: %v", err)
		}
		raw = s
	default:
		return "", bad("expected a mailbox name, got %s", quote(f))
	}
	name, err := utf7.Encoding.NewDecoder().String(raw)
	if err != nil {
		return "", bad("mailbox name %s is not valid modified UTF-7", strconv.QuoteToASCII(raw))
	}
	return mapping.MailboxKey(name), nil
}

// fetchAtts parses MessageNew's fetch-att list as the fork's FETCH parses
// its items (upper-cased, the macros ALL, FAST and FULL expanded) and checks
// each one as go-imap-sql will when it fetches: one of the simple items, or
// a body section go-imap v1 can parse.
func fetchAtts(l []interface{}) ([]imap.FetchItem, *Error) {
	if len(l) == 0 {
		return nil, bad("empty fetch-att list")
	}
	var items []imap.FetchItem
	for _, f := range l {
		s, ok := atom(f)
		if !ok {
			return nil, bad("expected a FETCH attribute, got %s", quote(f))
		}
		for _, it := range imap.FetchItem(strings.ToUpper(s)).Expand() {
			if !fetchItemOK(it) {
				return nil, bad("unknown FETCH attribute %s", strconv.QuoteToASCII(s))
			}
			items = append(items, it)
		}
	}
	return items, nil
}

func fetchItemOK(it imap.FetchItem) bool {
	switch it {
	case imap.FetchBody, imap.FetchBodyStructure, imap.FetchEnvelope, imap.FetchFlags,
		imap.FetchInternalDate, imap.FetchRFC822Size, imap.FetchUid:
		return true
	}
	// RFC822, RFC822.HEADER, RFC822.TEXT and BODY[...], BODY.PEEK[...].
	_, err := imap.ParseBodySectionName(it)
	return err == nil
}

// atom returns f as a string when go-imap v1 read it as an atom or a quoted
// string (it does not tell them apart).
func atom(f interface{}) (string, bool) {
	s, ok := f.(string)
	return s, ok
}

// quote describes a field for an error text, in 7-bit ASCII.
func quote(f interface{}) string {
	switch f := f.(type) {
	case nil:
		return "NIL"
	case string:
		return strconv.QuoteToASCII(f)
	case []interface{}:
		return "a list"
	case imap.Literal:
		return "a literal"
	default:
		return fmt.Sprintf("%T", f)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func containsItem(l []imap.FetchItem, it imap.FetchItem) bool {
	for _, x := range l {
		if x == it {
			return true
		}
	}
	return false
}
