// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import "strings"

// Mailbox attributes storage.notify writes itself (RFC 5258).
const (
	AttrNonExistent = `\NonExistent`
	AttrSubscribed  = `\Subscribed`
)

// ListLine returns the untagged LIST response for mailbox (a UTF-8 name):
//
//	S: * LIST (\HasNoChildren) "/" "box"\r\n
//
// attrs are written as given, in order, separated by spaces; "()" when there
// are none. What RFC 3501 and RFC 5258 cannot carry as a mailbox attribute
// is left out: an attribute that is not a backslash followed by an atom
// (mbx-list-flags has no keywords), and every selectability attribute
// (mbx-list-sflag: \Noselect, \Marked, \Unmarked, \NonExistent, any case)
// after the first, as a LIST line has at most one. delim is the hierarchy
// delimiter, one 7-bit character written as a quoted string; "" writes NIL.
// With oldName != "" the line carries the RFC 5465 OLDNAME extended data item
// (RFC 5258 mbox-list-extended):
//
//	S: * LIST () "/" "new" ("OLDNAME" ("old"))\r\n
func ListLine(attrs []string, delim string, mailbox string, oldName string) []byte {
	b := make([]byte, 0, 24+len(mailbox)+len(oldName)+16*len(attrs))
	b = append(b, "* LIST ("...)
	first, sflag := true, false
	for _, a := range attrs {
		if !validListAttr(a) {
			continue
		}
		if isSFlag(a) {
			if sflag {
				continue
			}
			sflag = true
		}
		if !first {
			b = append(b, ' ')
		}
		first = false
		b = append(b, a...)
	}
	b = append(b, ") "...)
	if delim == "" {
		b = append(b, "NIL"...)
	} else {
		b = appendString(b, delim)
	}
	b = append(b, ' ')
	b = appendMailbox(b, mailbox)
	if oldName != "" {
		b = append(b, ` ("OLDNAME" (`...)
		b = appendMailbox(b, oldName)
		b = append(b, "))"...)
	}
	return append(b, "\r\n"...)
}

// validListAttr reports whether s can be written as a mailbox attribute:
// "\" atom (RFC 3501 flag-extension; every attribute of RFC 3501, 5258 and
// 6154 has this form).
func validListAttr(s string) bool {
	return len(s) > 1 && s[0] == '\\' && validAtom(s[1:])
}

// isSFlag reports whether a is one of the attributes of which a LIST line
// carries at most one (RFC 3501 mbx-list-sflag, with RFC 5258's
// \NonExistent).
func isSFlag(a string) bool {
	for _, f := range []string{`\Noselect`, `\Marked`, `\Unmarked`, AttrNonExistent} {
		if strings.EqualFold(a, f) {
			return true
		}
	}
	return false
}

// WithoutSubscribed returns the attributes of a mailbox without any
// \Subscribed (in any case): what a LIST line of a mailbox event carries,
// the subscription being the SubscriptionChange event's to add.
func WithoutSubscribed(attrs []string) []string { return SubscriptionAttrs(attrs, false) }

// HasAttr reports whether attrs hold want, compared without regard to case
// (mailbox attributes are case-insensitive).
func HasAttr(attrs []string, want string) bool {
	for _, a := range attrs {
		if strings.EqualFold(a, want) {
			return true
		}
	}
	return false
}

// IsSubscribed reports whether attrs (a LIST response's attributes, as
// go-imap v1's ListMailboxes returns them) say \Subscribed.
func IsSubscribed(attrs []string) bool { return HasAttr(attrs, AttrSubscribed) }

// SubscriptionAttrs returns attrs without any \Subscribed (in any case),
// followed by \Subscribed when subscribed is true.
func SubscriptionAttrs(attrs []string, subscribed bool) []string {
	out := make([]string, 0, len(attrs)+1)
	for _, a := range attrs {
		if !strings.EqualFold(a, AttrSubscribed) {
			out = append(out, a)
		}
	}
	if subscribed {
		out = append(out, AttrSubscribed)
	}
	return out
}
