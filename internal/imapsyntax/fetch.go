// SPDX-License-Identifier: GPL-3.0-or-later

package imapsyntax

import "strings"

// msgAtt: "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic /
// msg-att-static)) ")", with RFC 7162's MODSEQ.
func (p *parser) msgAtt() {
	p.byte('(')
	for {
		p.msgAttItem()
		if p.peek() != ' ' {
			break
		}
		p.sp()
	}
	p.byte(')')
}

func (p *parser) msgAttItem() {
	switch {
	case p.accept("FLAGS"):
		p.sp()
		p.flagList(false) // flag-fetch: flag / "\Recent" (a flag-extension)
	case p.accept("UID"):
		p.sp()
		p.nzNumber()
	case p.accept("ENVELOPE"):
		p.sp()
		p.envelope()
	case p.accept("INTERNALDATE"):
		p.sp()
		p.dateTime()
	case p.accept("RFC822.SIZE"):
		p.sp()
		p.number()
	case p.accept("RFC822.HEADER"), p.accept("RFC822.TEXT"):
		p.sp()
		p.nstring("RFC822 data")
	case p.accept("RFC822"):
		p.sp()
		p.nstring("RFC822 data")
	case p.accept("BODYSTRUCTURE"):
		p.sp()
		p.body()
	case p.accept("BODY"):
		if p.peek() == '[' {
			p.section()
			if p.peek() == '<' {
				p.i++
				p.number()
				p.byte('>')
			}
			p.sp()
			p.nstring("body section data")
			return
		}
		p.sp()
		p.body()
	case p.accept("MODSEQ"):
		p.sp()
		p.byte('(')
		p.modSeq(false)
		p.byte(')')
	default:
		p.fail("msg-att (FLAGS, UID, ENVELOPE, INTERNALDATE, RFC822[.HEADER/.TEXT/.SIZE], BODY, BODYSTRUCTURE, BODY[section] or MODSEQ)")
	}
	if p.isAtomCharHere() {
		p.fail(`SP or ")" after a msg-att value`)
	}
}

// section: "[" [section-spec] "]".
func (p *parser) section() {
	p.byte('[')
	if p.peek() == ']' {
		p.i++
		return
	}
	if isDigit(p.peek()) {
		p.nzNumber()
		for p.peek() == '.' && isDigit(p.peekAt(1)) {
			p.i++
			p.nzNumber()
		}
		if p.peek() == '.' {
			p.i++
			if !p.accept("MIME") {
				p.sectionMsgtext()
			}
		}
	} else {
		p.sectionMsgtext()
	}
	p.byte(']')
}

// sectionMsgtext: "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT".
func (p *parser) sectionMsgtext() {
	switch {
	case p.accept("HEADER.FIELDS"):
		p.accept(".NOT")
		p.sp()
		p.byte('(')
		for {
			p.astring("header-fld-name")
			if p.peek() != ' ' {
				break
			}
			p.sp()
		}
		p.byte(')')
	case p.accept("HEADER"), p.accept("TEXT"):
	default:
		p.fail(`section-msgtext ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT" or "TEXT")`)
	}
}

var months = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// dateTime: DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP
// zone DQUOTE.
func (p *parser) dateTime() {
	p.byteNamed('"', `date-time (DQUOTE "dd-Mon-yyyy hh:mm:ss +zzzz" DQUOTE)`)
	if p.peek() == ' ' {
		p.i++
		p.digits(1, "date-day-fixed")
	} else {
		p.digits(2, "date-day-fixed (SP DIGIT / 2DIGIT)")
	}
	p.byte('-')
	ok := false
	for _, m := range months {
		if p.accept(m) {
			ok = true
			break
		}
	}
	if !ok {
		p.fail("date-month (Jan ... Dec)")
	}
	p.byte('-')
	p.digits(4, "date-year (4DIGIT)")
	p.sp()
	p.digits(2, "hours (2DIGIT)")
	p.byte(':')
	p.digits(2, "minutes (2DIGIT)")
	p.byte(':')
	p.digits(2, "seconds (2DIGIT)")
	p.sp()
	if p.peek() != '+' && p.peek() != '-' {
		p.fail(`zone ("+" / "-" 4DIGIT)`)
	}
	p.i++
	p.digits(4, "zone (4DIGIT)")
	p.byteNamed('"', `DQUOTE closing date-time`)
}

func (p *parser) digits(n int, what string) {
	for k := 0; k < n; k++ {
		if !isDigit(p.peek()) {
			p.fail(what)
		}
		p.i++
	}
}

// envelope: "(" env-date SP env-subject SP env-from SP env-sender SP
// env-reply-to SP env-to SP env-cc SP env-bcc SP env-in-reply-to SP
// env-message-id ")".
func (p *parser) envelope() {
	p.byteNamed('(', `envelope ("(")`)
	p.nstring("env-date")
	p.sp()
	p.nstring("env-subject")
	for _, f := range []string{"env-from", "env-sender", "env-reply-to", "env-to", "env-cc", "env-bcc"} {
		p.sp()
		p.addressList(f)
	}
	p.sp()
	p.nstring("env-in-reply-to")
	p.sp()
	p.nstring("env-message-id")
	p.byte(')')
}

// addressList: "(" 1*address ")" / nil (no SP between addresses).
func (p *parser) addressList(what string) {
	if p.isNil() {
		return
	}
	if p.peek() != '(' {
		p.fail(what + ` ("(" 1*address ")" or NIL)`)
	}
	p.i++
	if p.peek() != '(' {
		p.fail(what + ` (1*address: "(" after "("; an empty address list is NIL)`)
	}
	for p.peek() == '(' {
		p.address()
	}
	if p.peek() == ' ' {
		p.fail(what + ` ("(" of the next address or ")": 1*address has no SP between addresses)`)
	}
	p.byte(')')
}

// address: "(" addr-name SP addr-adl SP addr-mailbox SP addr-host ")".
func (p *parser) address() {
	p.byte('(')
	p.nstring("addr-name")
	p.sp()
	p.nstring("addr-adl")
	p.sp()
	p.nstring("addr-mailbox")
	p.sp()
	p.nstring("addr-host")
	p.byte(')')
}

// body: "(" (body-type-1part / body-type-mpart) ")".
func (p *parser) body() {
	p.byteNamed('(', `body ("(")`)
	if p.peek() == '(' {
		p.bodyMpart()
	} else {
		p.body1part()
	}
	p.byteNamed(')', `")" closing a body`)
}

// bodyMpart: 1*body SP media-subtype [SP body-ext-mpart].
func (p *parser) bodyMpart() {
	for p.peek() == '(' {
		p.body()
	}
	if p.peek() == ' ' && p.peekAt(1) == '(' {
		p.fail(`"(" of the next part or SP media-subtype (1*body has no SP between parts)`)
	}
	p.sp()
	p.str("media-subtype")
	if p.peek() != ' ' {
		return
	}
	// body-ext-mpart: body-fld-param [SP body-fld-dsp [SP body-fld-lang
	// [SP body-fld-loc *(SP body-extension)]]]
	p.sp()
	p.bodyFldParam()
	p.bodyExtTail()
}

// body1part: (body-type-basic / body-type-msg / body-type-text)
// [SP body-ext-1part], chosen by the media type.
func (p *parser) body1part() {
	typ := strings.ToUpper(string(p.str("media-type")))
	p.sp()
	sub := strings.ToUpper(string(p.str("media-subtype")))
	p.sp()
	p.bodyFields()
	switch {
	case typ == "TEXT":
		p.sp()
		p.bodyFldLines()
	case typ == "MESSAGE" && sub == "RFC822":
		p.sp()
		p.envelope()
		p.sp()
		p.body()
		p.sp()
		p.bodyFldLines()
	}
	if p.peek() != ' ' {
		return
	}
	// body-ext-1part: body-fld-md5 [SP body-fld-dsp [SP body-fld-lang
	// [SP body-fld-loc *(SP body-extension)]]]
	p.sp()
	p.nstring("body-fld-md5")
	p.bodyExtTail()
}

func (p *parser) bodyFldLines() {
	if !isDigit(p.peek()) {
		p.fail("body-fld-lines (number)")
	}
	p.number()
}

// bodyExtTail: [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc
// *(SP body-extension)]]].
func (p *parser) bodyExtTail() {
	if p.peek() != ' ' {
		return
	}
	p.sp()
	// body-fld-dsp: "(" string SP body-fld-param ")" / nil
	if !p.isNil() {
		p.byteNamed('(', `body-fld-dsp ("(" string SP body-fld-param ")" or NIL)`)
		p.str("disposition type")
		p.sp()
		p.bodyFldParam()
		p.byte(')')
	}
	if p.peek() != ' ' {
		return
	}
	p.sp()
	// body-fld-lang: nstring / "(" string *(SP string) ")"
	if p.peek() == '(' {
		p.i++
		p.str(`body-fld-lang (a language; an empty list is NIL)`)
		for p.peek() == ' ' {
			p.sp()
			p.str("body-fld-lang")
		}
		p.byte(')')
	} else {
		p.nstring("body-fld-lang")
	}
	if p.peek() != ' ' {
		return
	}
	p.sp()
	p.nstring("body-fld-loc")
	for p.peek() == ' ' {
		p.sp()
		p.bodyExtension()
	}
}

// bodyExtension: nstring / number / "(" body-extension *(SP body-extension) ")".
func (p *parser) bodyExtension() {
	switch {
	case isDigit(p.peek()):
		p.number()
	case p.peek() == '(':
		p.i++
		for {
			p.bodyExtension()
			if p.peek() != ' ' {
				break
			}
			p.sp()
		}
		p.byte(')')
	default:
		p.nstring("body-extension")
	}
}

// bodyFields: body-fld-param SP body-fld-id SP body-fld-desc SP
// body-fld-enc SP body-fld-octets.
func (p *parser) bodyFields() {
	p.bodyFldParam()
	p.sp()
	p.nstring("body-fld-id")
	p.sp()
	p.nstring("body-fld-desc")
	p.sp()
	// body-fld-enc: a string (never NIL)
	if p.peek() != '"' && p.peek() != '{' {
		p.fail(`body-fld-enc (a string such as "7BIT"; NIL is not allowed)`)
	}
	p.str("body-fld-enc")
	p.sp()
	if !isDigit(p.peek()) {
		p.fail("body-fld-octets (number)")
	}
	p.number()
}

// bodyFldParam: "(" string SP string *(SP string SP string) ")" / nil.
func (p *parser) bodyFldParam() {
	if p.isNil() {
		return
	}
	p.byteNamed('(', `body-fld-param ("(" string SP string ... ")" or NIL)`)
	if p.peek() == ')' {
		p.fail(`body-fld-param attribute (an empty parameter list is NIL, not "()")`)
	}
	for {
		p.str("body-fld-param attribute")
		p.sp()
		p.str("body-fld-param value")
		if p.peek() != ' ' {
			break
		}
		p.sp()
	}
	p.byte(')')
}
