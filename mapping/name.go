// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-imap/utf7"
)

// inbox is the wire form of the INBOX mailbox.
const inbox = "INBOX"

// IsInbox reports whether name is INBOX, which IMAP compares without regard
// to case (RFC 3501 section 5.1). Only ASCII case is folded: "ınbox" with a
// dotless i is an ordinary mailbox.
func IsInbox(name string) bool {
	if len(name) != len(inbox) {
		return false
	}
	for i := 0; i < len(inbox); i++ {
		c := name[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != inbox[i] {
			return false
		}
	}
	return true
}

// SameMailbox reports whether a and b name the same mailbox: equal, or both
// INBOX in any case.
func SameMailbox(a, b string) bool {
	return a == b || (IsInbox(a) && IsInbox(b))
}

// MailboxKey is the canonical map key for a mailbox name: the name, with
// INBOX in any case as "INBOX".
func MailboxKey(name string) string {
	if IsInbox(name) {
		return inbox
	}
	return name
}

// MailboxName returns the wire form of the UTF-8 mailbox name: INBOX (in any
// case) as the atom INBOX; any other name encoded in modified UTF-7 (RFC 3501
// section 5.1.3, with go-imap v1's encoder, as maddy's LIST does) and written
// as a quoted string with '"' and '\' escaped — or, if the encoded name could
// not be a quoted string, as a synchronising literal "{n}\r\n...".
//
// MailboxName is total: it never fails. Modified UTF-7 leaves only printable
// ASCII, so the literal form does not occur for any name; invalid UTF-8 is
// encoded as U+FFFD (check names with event.CheckMailboxName first).
func MailboxName(name string) []byte {
	return appendMailbox(nil, name)
}

func appendMailbox(b []byte, name string) []byte {
	if IsInbox(name) {
		return append(b, inbox...)
	}
	enc, err := utf7.Encoding.NewEncoder().String(name)
	if err != nil {
		// go-imap's encoder reports no errors of its own; x/text's
		// transform only fails on a short buffer, which String handles.
		panic(fmt.Sprintf("mapping: modified UTF-7 encoder failed on %q: %v", name, err))
	}
	return appendString(b, enc)
}

// appendString appends s as an IMAP string (RFC 3501 "string"): quoted when
// every byte is a 7-bit TEXT-CHAR, a literal otherwise.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c >= utf8.RuneSelf {
			return appendLiteral(b, s)
		}
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func appendLiteral(b []byte, s string) []byte {
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, "}\r\n"...)
	return append(b, s...)
}

// validAtom reports whether s is an IMAP atom (RFC 3501): one or more
// ATOM-CHARs, i.e. 7-bit characters except CTL, SP and "(){%*"\]".
func validAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

// validAttr reports whether s can be written as a mailbox attribute or flag:
// an atom, optionally preceded by one backslash.
func validAttr(s string) bool {
	return validAtom(strings.TrimPrefix(s, `\`))
}
