// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"mime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap"
)

// The BODYSTRUCTURE and ENVELOPE writers. go-imap v1 (imap.BodyStructure
// and imap.Envelope Format, which maddy's own FETCH uses) writes forms RFC
// 3501's formal syntax does not have, and a strict client parser (imap-proto)
// drops the connection on them:
//
//   - body-fld-enc NIL when the part has no Content-Transfer-Encoding (the
//     grammar wants a string; RFC 2045's default is 7BIT);
//   - body-fld-param "()" for a part without parameters (the grammar has
//     NIL or a non-empty list), also inside body-fld-dsp;
//   - a SP between the parts of a multipart ("1*body SP media-subtype") and
//     between the addresses of an address list ("(" 1*address ")");
//   - body-fld-loc as a list (the grammar has one nstring) and body-fld-lang
//     as "()" for an empty list;
//   - a multipart without parts, a message/rfc822 part without envelope or
//     body, written as fields the grammar cannot read;
//   - parameters in map order, so the bytes vary between calls.
//
// These writers take the same data and write RFC 3501 section 9 syntax:
// parameters sorted by name, everything else in go-imap v1's order, and
// header text (descriptions, disposition and parameter values, personal
// names, subjects) RFC 2047-encoded as go-imap v1 does, so a lenient client
// sees the values it saw before.

// BodyStructure returns bs as FetchLine writes it after "BODYSTRUCTURE ":
// RFC 3501 "body" with extension data. bs must not be nil; it is not
// modified.
func BodyStructure(bs *imap.BodyStructure) []byte {
	return appendBody(nil, bs, true)
}

// emptyPart stands for a part the structure lacks where the grammar needs
// one: the body of a multipart without parts, or of a message/rfc822 part
// whose body structure is missing. It is an empty text/plain part, as
// RFC 2045 defaults an unlabelled body to.
var emptyPart = &imap.BodyStructure{MIMEType: "text", MIMESubType: "plain"}

// appendBody appends body (RFC 3501 "body") for bs; extended adds the
// extension data (BODYSTRUCTURE rather than BODY). As in go-imap v1, a
// nested part has extension data when extended and its own Extended are
// both set (the store's structures have Extended set on every part).
func appendBody(b []byte, bs *imap.BodyStructure, extended bool) []byte {
	b = append(b, '(')
	if strings.EqualFold(bs.MIMEType, "multipart") {
		// body-type-mpart: 1*body SP media-subtype [SP body-ext-mpart]
		if len(bs.Parts) == 0 {
			b = appendBody(b, emptyPart, false)
		}
		for _, part := range bs.Parts {
			if part == nil {
				part = emptyPart
			}
			b = appendBody(b, part, extended && part.Extended)
		}
		b = append(b, ' ')
		b = appendText(b, bs.MIMESubType)
		if extended {
			b = append(b, ' ')
			b = appendParams(b, bs.Params)
			b = appendExtTail(b, bs)
		}
		return append(b, ')')
	}

	// body-type-1part
	typ, sub := bs.MIMEType, bs.MIMESubType
	if typ == "" {
		typ, sub = "text", "plain" // RFC 2045 5.2
	}
	b = appendText(b, typ)
	b = append(b, ' ')
	b = appendText(b, sub)
	// body-fields
	b = append(b, ' ')
	b = appendParams(b, bs.Params)
	b = append(b, ' ')
	b = appendNString(b, bs.Id)
	b = append(b, ' ')
	b = appendNString(b, encodeHeader(bs.Description))
	b = append(b, ' ')
	if bs.Encoding == "" {
		b = append(b, `"7BIT"`...) // RFC 2045 6.1
	} else {
		b = appendText(b, bs.Encoding)
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(bs.Size), 10)
	switch {
	case strings.EqualFold(typ, "message") && strings.EqualFold(sub, "rfc822"):
		// body-type-msg: ... SP envelope SP body SP body-fld-lines
		env := bs.Envelope
		if env == nil {
			env = &imap.Envelope{}
		}
		inner := bs.BodyStructure
		if inner == nil {
			inner = emptyPart
		}
		b = append(b, ' ')
		b = appendEnvelope(b, env)
		b = append(b, ' ')
		b = appendBody(b, inner, extended && inner.Extended)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(bs.Lines), 10)
	case strings.EqualFold(typ, "text"):
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(bs.Lines), 10)
	}
	if extended {
		// body-ext-1part: body-fld-md5 SP body-fld-dsp SP body-fld-lang SP body-fld-loc
		b = append(b, ' ')
		b = appendNString(b, bs.MD5)
		b = appendExtTail(b, bs)
	}
	return append(b, ')')
}

// appendExtTail appends SP body-fld-dsp SP body-fld-lang SP body-fld-loc.
func appendExtTail(b []byte, bs *imap.BodyStructure) []byte {
	b = append(b, ' ')
	if bs.Disposition == "" {
		b = append(b, "NIL"...)
	} else {
		b = append(b, '(')
		b = appendText(b, encodeHeader(bs.Disposition))
		b = append(b, ' ')
		b = appendParams(b, bs.DispositionParams)
		b = append(b, ')')
	}
	b = append(b, ' ')
	var langs []string
	for _, l := range bs.Language {
		if l != "" {
			langs = append(langs, l)
		}
	}
	if len(langs) == 0 {
		b = append(b, "NIL"...)
	} else {
		b = append(b, '(')
		for i, l := range langs {
			if i > 0 {
				b = append(b, ' ')
			}
			b = appendText(b, l)
		}
		b = append(b, ')')
	}
	b = append(b, ' ')
	loc := ""
	if len(bs.Location) > 0 {
		loc = bs.Location[0] // Content-Location has one value
	}
	return appendNString(b, loc)
}

// appendParams appends body-fld-param: NIL for no parameters, else the
// pairs sorted by name, values RFC 2047-encoded as go-imap v1 does.
func appendParams(b []byte, params map[string]string) []byte {
	if len(params) == 0 {
		return append(b, "NIL"...)
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '(')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendText(b, k)
		b = append(b, ' ')
		b = appendText(b, encodeHeader(params[k]))
	}
	return append(b, ')')
}

// appendEnvelope appends envelope for env, as go-imap v1 fills the fields
// (RFC 2047-encoded subject and personal names), in RFC 3501 syntax.
func appendEnvelope(b []byte, env *imap.Envelope) []byte {
	b = append(b, '(')
	if env.Date.IsZero() {
		b = append(b, "NIL"...)
	} else {
		b = appendText(b, env.Date.Format(envelopeDateLayout))
	}
	b = append(b, ' ')
	b = appendNString(b, encodeHeader(env.Subject))
	for _, list := range [][]*imap.Address{env.From, env.Sender, env.ReplyTo, env.To, env.Cc, env.Bcc} {
		b = append(b, ' ')
		b = appendAddressList(b, list)
	}
	b = append(b, ' ')
	b = appendNString(b, env.InReplyTo)
	b = append(b, ' ')
	b = appendNString(b, env.MessageId)
	return append(b, ')')
}

// envelopeDateLayout is go-imap v1's (RFC 5322 date-time).
const envelopeDateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// appendAddressList appends "(" 1*address ")" / nil.
func appendAddressList(b []byte, list []*imap.Address) []byte {
	n := 0
	for _, a := range list {
		if a == nil {
			continue
		}
		if n == 0 {
			b = append(b, '(')
		}
		n++
		b = append(b, '(')
		b = appendNString(b, encodeHeader(a.PersonalName))
		b = append(b, ' ')
		b = appendNString(b, a.AtDomainList)
		b = append(b, ' ')
		b = appendNString(b, a.MailboxName)
		b = append(b, ' ')
		b = appendNString(b, a.HostName)
		b = append(b, ')')
	}
	if n == 0 {
		return append(b, "NIL"...)
	}
	return append(b, ')')
}

// appendNString appends s as nstring: NIL when empty, else appendText.
func appendNString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "NIL"...)
	}
	return appendText(b, s)
}

// appendText appends s as a string for free text from a message (header
// values): quoted, or a literal when s has 8-bit bytes, CR or LF. NUL, which
// no IMAP string can carry, is left out.
func appendText(b []byte, s string) []byte {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return appendString(b, s)
}

// encodeHeader is go-imap v1's encoding of header text in ENVELOPE and
// BODYSTRUCTURE: RFC 2047 Q-encoding where s is not plain ASCII.
func encodeHeader(s string) string {
	return mime.QEncoding.Encode("utf-8", s)
}

// appendDateTime appends date-time (INTERNALDATE) as go-imap v1 writes it.
func appendDateTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, imap.DateTimeLayout)
	return append(b, '"')
}
