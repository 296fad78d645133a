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
// are none. An attribute that is not an atom optionally preceded by one
// backslash cannot be written and is left out. delim is the hierarchy
// delimiter, one 7-bit character written as a quoted string; "" writes NIL.
// With oldName != "" the line carries the RFC 5465 OLDNAME extended data item
// (RFC 5258 mbox-list-extended):
//
//	S: * LIST () "/" "new" ("OLDNAME" ("old"))\r\n
func ListLine(attrs []string, delim string, mailbox string, oldName string) []byte {
	b := make([]byte, 0, 24+len(mailbox)+len(oldName)+16*len(attrs))
	b = append(b, "* LIST ("...)
	first := true
	for _, a := range attrs {
		if !validAttr(a) {
			continue
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

// WithoutSubscribed returns the attributes of a mailbox without any
// \Subscribed (in any case): what a LIST line of a mailbox event carries,
// the subscription being the SubscriptionChange event's to add.
func WithoutSubscribed(attrs []string) []string { return subscriptionAttrs(attrs, false) }

// subscriptionAttrs returns attrs without any \Subscribed (in any case),
// followed by \Subscribed when subscribed is true.
func subscriptionAttrs(attrs []string, subscribed bool) []string {
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
