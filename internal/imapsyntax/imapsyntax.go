// SPDX-License-Identifier: GPL-3.0-or-later

// Package imapsyntax is a strict checker of IMAP server responses against
// the formal syntax of RFC 3501 section 9, with the additions of the
// extensions storage.notify speaks: RFC 4551/7162 (HIGHESTMODSEQ, MODSEQ,
// NOMODSEQ, MODIFIED), RFC 5258 (LIST-EXTENDED: \NonExistent, \Subscribed,
// \Remote, child flags, mbox-list-extended with CHILDINFO) and RFC 5465
// (NOTIFY: OLDNAME, NOTIFICATIONOVERFLOW, BADEVENT), and RFC 5256's SORT
// and THREAD responses (maddy answers those commands).
//
// It is test support: any test may call it on a line a server wrote. It
// checks syntax only (no state: a FETCH of sequence number 9 in a mailbox of
// 3 messages passes). Where the ABNF is ambiguous it takes the reading real
// strict clients take and says so: a body part's grammar is chosen by its
// media type (TEXT needs body-fld-lines, MESSAGE/RFC822 needs envelope, body
// and lines), and a response code whose name RFC 3501 or an extension above
// defines must have that code's arguments (the catch-all "atom [SP text]"
// is for other names). Mailbox names must be valid modified UTF-7 (RFC 3501
// section 5.1.3) whatever string form carries them.
//
// Errors are *Error values that name the byte offset in the line and what
// the grammar expected there.
//
// The package imports only the standard library and nothing of this module.
package imapsyntax

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Options select the grammar variant.
type Options struct {
	// Plain checks with RFC 3501's LIST grammar only, the one a client
	// that did not negotiate LIST-EXTENDED or NOTIFY parses: a LIST or LSUB
	// line with mbox-list-extended data (e.g. OLDNAME) is an error.
	Plain bool
}

// Error is a syntax error: at byte Offset of Line the grammar expected
// Expected.
type Error struct {
	Line     []byte
	Offset   int
	Expected string
}

func (e *Error) Error() string {
	found := "end of line"
	if e.Offset < len(e.Line) {
		end := e.Offset + 16
		if end > len(e.Line) {
			end = len(e.Line)
		}
		found = fmt.Sprintf("%q", e.Line[e.Offset:end])
	}
	return fmt.Sprintf("imapsyntax: byte %d: expected %s, found %s (line %q)", e.Offset, e.Expected, found, e.Line)
}

// CheckResponse reports whether line is one complete untagged server
// response (response-data or response-fatal), CRLF included, with every
// literal's bytes in place, in the full grammar (LIST may carry extended
// data). It returns nil or an *Error.
func CheckResponse(line []byte) error { return Check(line, Options{}) }

// CheckPlainResponse is CheckResponse with Options.Plain: LIST and LSUB
// lines must be RFC 3501 only.
func CheckPlainResponse(line []byte) error { return Check(line, Options{Plain: true}) }

// Check is CheckResponse with explicit options.
func Check(line []byte, opts Options) (err error) {
	p := &parser{b: line, opts: opts}
	defer p.recover(&err)
	p.untagged()
	return nil
}

// CheckTagged reports whether line is one complete tagged response
// (response-tagged: tag SP resp-cond-state CRLF). It returns nil or an
// *Error.
func CheckTagged(line []byte) (err error) {
	p := &parser{b: line}
	defer p.recover(&err)
	start := p.i
	for p.i < len(p.b) && isAstringChar(p.b[p.i]) && p.b[p.i] != '+' {
		p.i++
	}
	if p.i == start {
		p.fail("tag (1*<ASTRING-CHAR except \"+\">)")
	}
	p.sp()
	p.condState()
	p.crlfEnd()
	return nil
}

type parser struct {
	b    []byte
	i    int
	opts Options
}

// syntaxError carries an *Error through panic to the public function that
// recovers it; it never leaves the package.
type syntaxError struct{ err *Error }

func (p *parser) recover(err *error) {
	if r := recover(); r != nil {
		se, ok := r.(syntaxError)
		if !ok {
			panic(r)
		}
		*err = se.err
	}
}

func (p *parser) fail(expected string) {
	p.failAt(p.i, expected)
}

func (p *parser) failAt(off int, expected string) {
	panic(syntaxError{&Error{Line: p.b, Offset: off, Expected: expected}})
}

func (p *parser) peek() int {
	if p.i < len(p.b) {
		return int(p.b[p.i])
	}
	return -1
}

func (p *parser) byte(c byte) {
	if p.peek() != int(c) {
		p.fail(strconv.Quote(string(c)))
	}
	p.i++
}

func (p *parser) sp() { p.byteNamed(' ', "SP") }

func (p *parser) byteNamed(c byte, name string) {
	if p.peek() != int(c) {
		p.fail(name)
	}
	p.i++
}

// has reports whether the input continues with the case-insensitive word w.
func (p *parser) has(w string) bool {
	return len(p.b)-p.i >= len(w) && strings.EqualFold(string(p.b[p.i:p.i+len(w)]), w)
}

// word consumes the case-insensitive keyword w (ABNF strings are case-
// insensitive).
func (p *parser) word(w string) {
	if !p.has(w) {
		p.fail(strconv.Quote(w))
	}
	p.i += len(w)
}

// accept consumes w if the input continues with it.
func (p *parser) accept(w string) bool {
	if p.has(w) {
		p.i += len(w)
		return true
	}
	return false
}

func (p *parser) crlfEnd() {
	if p.peek() != '\r' || p.i+1 >= len(p.b) || p.b[p.i+1] != '\n' {
		p.fail("CRLF")
	}
	p.i += 2
	if p.i != len(p.b) {
		p.fail("end of input after CRLF")
	}
}

// Character classes (RFC 3501 section 9).

func isCTL(c byte) bool { return c < 0x20 || c == 0x7f }

func isAtomChar(c byte) bool {
	return c < 0x80 && c > 0 && !isCTL(c) && strings.IndexByte(`(){ %*"\]`, c) < 0
}

func isAstringChar(c byte) bool { return isAtomChar(c) || c == ']' }

func isTextChar(c byte) bool { return c > 0 && c < 0x80 && c != '\r' && c != '\n' }

func isDigit(c int) bool { return c >= '0' && c <= '9' }

// atom reads 1*ATOM-CHAR and returns it.
func (p *parser) atom() string {
	start := p.i
	for p.i < len(p.b) && isAtomChar(p.b[p.i]) {
		p.i++
	}
	if p.i == start {
		p.fail("atom")
	}
	return string(p.b[start:p.i])
}

// number reads number (1*DIGIT, unsigned 32-bit).
func (p *parser) number() uint64 { return p.num(false, 1<<32-1, "number") }

// nzNumber reads nz-number (digit-nz *DIGIT, unsigned 32-bit).
func (p *parser) nzNumber() uint64 { return p.num(true, 1<<32-1, "nz-number") }

// modSeq reads mod-sequence-value (RFC 7162: 1 <= n < 2^63); zero allows
// mod-sequence-valzer ("0" / mod-sequence-value).
func (p *parser) modSeq(zero bool) uint64 {
	if zero && p.peek() == '0' && !isDigit(p.peekAt(1)) {
		p.i++
		return 0
	}
	return p.num(true, 1<<63-1, "mod-sequence-value")
}

// numberAt checks the digits at b[start:end] as number (nz false) or
// nz-number, leaving the position where it was.
func (p *parser) numberAt(start, end int, nz bool) {
	save := p.i
	p.i = start
	if nz {
		p.nzNumber()
	} else {
		p.number()
	}
	if p.i != end {
		p.fail("SP")
	}
	p.i = save
}

func (p *parser) peekAt(k int) int {
	if p.i+k < len(p.b) {
		return int(p.b[p.i+k])
	}
	return -1
}

func (p *parser) num(nz bool, max uint64, name string) uint64 {
	start := p.i
	if nz && p.peek() == '0' {
		p.fail(name + " (no leading zero)")
	}
	for isDigit(p.peek()) {
		p.i++
	}
	if p.i == start {
		p.fail(name)
	}
	v, err := strconv.ParseUint(string(p.b[start:p.i]), 10, 64)
	if err != nil || v > max {
		p.failAt(start, fmt.Sprintf("%s (at most %d)", name, max))
	}
	return v
}

// nil_ reads nil ("NIL", any case) if present.
func (p *parser) isNil() bool {
	if p.has("NIL") && !isAtomChar(byte(p.peekAt(3))) {
		p.i += 3
		return true
	}
	return false
}

func (p *parser) peekAtIsAtom(k int) bool {
	c := p.peekAt(k)
	return c >= 0 && isAtomChar(byte(c))
}

// str reads string (quoted / literal) and returns its value.
func (p *parser) str(what string) []byte {
	switch p.peek() {
	case '"':
		return p.quoted()
	case '{':
		return p.literal()
	}
	p.fail(what + " (quoted string or literal)")
	return nil
}

// quoted reads DQUOTE *QUOTED-CHAR DQUOTE.
func (p *parser) quoted() []byte {
	p.byte('"')
	var v []byte
	for {
		c := p.peek()
		switch {
		case c == '"':
			p.i++
			return v
		case c == '\\':
			if n := p.peekAt(1); n != '"' && n != '\\' {
				p.failAt(p.i+1, `quoted-specials ('"' or '\') after '\' in a quoted string`)
			}
			v = append(v, p.b[p.i+1])
			p.i += 2
		case c < 0:
			p.fail(`QUOTED-CHAR or closing '"'`)
		case !isTextChar(byte(c)):
			p.fail("QUOTED-CHAR (7-bit, no NUL, CR or LF)")
		default:
			v = append(v, byte(c))
			p.i++
		}
	}
}

// literal reads "{" number "}" CRLF *CHAR8 (a server never sends the
// non-synchronizing "{n+}" form).
func (p *parser) literal() []byte {
	p.byte('{')
	n := p.number()
	if p.peek() == '+' {
		p.fail(`"}" (a server's literal has no "+")`)
	}
	p.byte('}')
	if p.peek() != '\r' || p.peekAt(1) != '\n' {
		p.fail("CRLF after literal size")
	}
	p.i += 2
	if uint64(len(p.b)-p.i) < n {
		p.failAt(len(p.b), fmt.Sprintf("%d bytes of literal data", n))
	}
	v := p.b[p.i : p.i+int(n)]
	if k := bytes.IndexByte(v, 0); k >= 0 {
		p.failAt(p.i+k, "CHAR8 (no NUL in a literal)")
	}
	p.i += int(n)
	return v
}

// nstring reads string / nil; it reports false for NIL.
func (p *parser) nstring(what string) ([]byte, bool) {
	if p.isNil() {
		return nil, false
	}
	if p.peek() != '"' && p.peek() != '{' {
		p.fail(what + " (nstring: quoted string, literal or NIL)")
	}
	return p.str(what), true
}

// astring reads 1*ASTRING-CHAR / string.
func (p *parser) astring(what string) []byte {
	if p.peek() == '"' || p.peek() == '{' {
		return p.str(what)
	}
	start := p.i
	for p.i < len(p.b) && isAstringChar(p.b[p.i]) {
		p.i++
	}
	if p.i == start {
		p.fail(what + " (astring)")
	}
	return p.b[start:p.i]
}

// mailbox reads mailbox ("INBOX" / astring) and checks that its value is
// modified UTF-7 (INBOX in any case is exempt).
func (p *parser) mailbox() {
	start := p.i
	v := p.astring("mailbox")
	if strings.EqualFold(string(v), "INBOX") {
		return
	}
	if off, msg := checkMUTF7(v); msg != "" {
		// Point into the value when it was written as is; else at its start.
		p.failAt(start+valueOffset(p.b[start:p.i], off), msg)
	}
}

// valueOffset maps an offset in a string's value to one in its wire form
// (exact for atoms; for quoted strings and literals, the start of the data).
func valueOffset(wire []byte, off int) int {
	switch {
	case len(wire) > 0 && wire[0] == '"':
		return 1 + off + bytes.Count(wire[1:min(len(wire), 1+off)], []byte{'\\'})
	case len(wire) > 0 && wire[0] == '{':
		return bytes.Index(wire, []byte("\r\n")) + 2 + off
	}
	return off
}

// checkMUTF7 checks a mailbox name in modified UTF-7 (RFC 3501 5.1.3). It
// returns the offset of the first error and what was expected there, or a
// "" message.
func checkMUTF7(v []byte) (int, string) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e {
			return i, "printable US-ASCII in a mailbox name (modified UTF-7: other characters are base64-encoded after '&')"
		}
		if c != '&' {
			continue
		}
		j := i + 1
		for j < len(v) && isB64(v[j]) {
			j++
		}
		if j >= len(v) || v[j] != '-' {
			return j, `'-' ending a modified base64 run in a mailbox name`
		}
		if j == i+1 {
			i = j // "&-" is '&'
			continue
		}
		if off, msg := checkB64Run(v[i+1 : j]); msg != "" {
			return i + 1 + off, msg
		}
		i = j
	}
	return 0, ""
}

func isB64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == ','
}

func b64val(c byte) uint32 {
	switch {
	case c >= 'A' && c <= 'Z':
		return uint32(c - 'A')
	case c >= 'a' && c <= 'z':
		return uint32(c-'a') + 26
	case c >= '0' && c <= '9':
		return uint32(c-'0') + 52
	case c == '+':
		return 62
	}
	return 63
}

// checkB64Run checks the base64 between '&' and '-': whole UTF-16 code
// units with zero padding bits, proper surrogate pairs, and no character
// that must represent itself (printable US-ASCII).
func checkB64Run(run []byte) (int, string) {
	var acc uint32
	bits := 0
	var units []uint16
	for _, c := range run {
		acc = acc<<6 | b64val(c)
		bits += 6
		if bits >= 16 {
			bits -= 16
			units = append(units, uint16(acc>>bits))
			acc &= 1<<bits - 1
		}
	}
	if bits >= 6 || acc != 0 {
		return len(run) - 1, "modified base64 of whole UTF-16 code units with zero padding bits"
	}
	for k := 0; k < len(units); k++ {
		u := units[k]
		switch {
		case u >= 0x20 && u <= 0x7e:
			return 0, fmt.Sprintf("no printable US-ASCII (U+%04X) inside modified base64", u)
		case u >= 0xd800 && u <= 0xdbff:
			if k+1 >= len(units) || units[k+1] < 0xdc00 || units[k+1] > 0xdfff {
				return 0, "a low surrogate after a high surrogate in modified base64"
			}
			k++
		case u >= 0xdc00 && u <= 0xdfff:
			return 0, "no unpaired low surrogate in modified base64"
		}
	}
	return 0, ""
}

// untagged: "*" SP (resp-cond-state / resp-cond-bye / mailbox-data /
// message-data / capability-data) CRLF.
func (p *parser) untagged() {
	p.byte('*')
	p.sp()
	switch {
	case isDigit(p.peek()):
		start := p.i
		for isDigit(p.peek()) {
			p.i++
		}
		end := p.i
		p.sp()
		switch {
		case p.has("EXISTS"), p.has("RECENT"):
			p.numberAt(start, end, false)
			p.i += len("EXISTS")
		case p.has("EXPUNGE"):
			p.numberAt(start, end, true)
			p.i += len("EXPUNGE")
		case p.has("FETCH"):
			p.numberAt(start, end, true)
			p.i += len("FETCH")
			p.sp()
			p.msgAtt()
		default:
			p.fail(`"EXISTS", "RECENT", "EXPUNGE" or "FETCH"`)
		}
	case p.has("OK") || p.has("NO") || p.has("BAD"):
		p.condState()
	case p.accept("BYE"):
		p.sp()
		p.respText()
	case p.has("CAPABILITY"):
		p.capabilityData()
	case p.accept("FLAGS"):
		p.sp()
		p.flagList(false)
	case p.accept("LIST"), p.accept("LSUB"):
		p.sp()
		p.mailboxList()
	case p.accept("SEARCH"):
		p.search()
	case p.accept("SORT"):
		for p.peek() == ' ' {
			p.sp()
			p.nzNumber()
		}
	case p.accept("THREAD"):
		// "THREAD" [SP 1*thread-list]
		if p.peek() == ' ' {
			p.sp()
			p.threadList()
			for p.peek() == '(' {
				p.threadList()
			}
		}
	case p.accept("STATUS"):
		p.sp()
		p.statusData()
	default:
		p.fail("number, OK, NO, BAD, BYE, CAPABILITY, FLAGS, LIST, LSUB, SEARCH, SORT, THREAD or STATUS")
	}
	p.crlfEnd()
}

// condState: ("OK" / "NO" / "BAD") SP resp-text.
func (p *parser) condState() {
	if !p.accept("OK") && !p.accept("NO") && !p.accept("BAD") {
		p.fail(`"OK", "NO" or "BAD"`)
	}
	p.sp()
	p.respText()
}

// respText: ["[" resp-text-code "]" SP] text; text = 1*TEXT-CHAR.
func (p *parser) respText() {
	if p.peek() == '[' {
		p.i++
		p.respTextCode()
		p.byte(']')
		p.sp()
	}
	p.text()
}

func (p *parser) text() {
	start := p.i
	for p.i < len(p.b) && isTextChar(p.b[p.i]) {
		p.i++
	}
	if p.i == start {
		p.fail("text (1*TEXT-CHAR: 7-bit, no CR or LF)")
	}
	if p.peek() >= 0x80 || p.peek() == 0 {
		p.fail("TEXT-CHAR (7-bit, no NUL) or CRLF")
	}
}

func (p *parser) respTextCode() {
	start := p.i
	name := strings.ToUpper(p.atomUntilBracket())
	switch name {
	case "ALERT", "PARSE", "READ-ONLY", "READ-WRITE", "TRYCREATE", "NOMODSEQ", "NOTIFICATIONOVERFLOW":
	case "BADCHARSET":
		if p.peek() == ' ' {
			p.sp()
			p.byte('(')
			p.astring("charset")
			for p.peek() == ' ' {
				p.sp()
				p.astring("charset")
			}
			p.byte(')')
		}
	case "CAPABILITY":
		p.i = start
		p.capabilityData()
	case "PERMANENTFLAGS":
		p.sp()
		p.flagList(true)
	case "UIDNEXT", "UIDVALIDITY", "UNSEEN":
		p.sp()
		p.nzNumber()
	case "HIGHESTMODSEQ":
		p.sp()
		p.modSeq(false)
	case "MODIFIED":
		p.sp()
		p.sequenceSet()
	case "BADEVENT":
		p.sp()
		p.byte('(')
		p.event()
		for p.peek() == ' ' {
			p.sp()
			p.event()
		}
		p.byte(')')
	default:
		// atom [SP 1*<any TEXT-CHAR except "]">]
		if p.peek() == ' ' {
			p.i++
			s := p.i
			for p.i < len(p.b) && isTextChar(p.b[p.i]) && p.b[p.i] != ']' {
				p.i++
			}
			if p.i == s {
				p.fail(`1*<TEXT-CHAR except "]"> after a response code's SP`)
			}
		}
	}
}

// atomUntilBracket reads a response code's name (an atom, which cannot
// contain "]").
func (p *parser) atomUntilBracket() string {
	start := p.i
	for p.i < len(p.b) && isAtomChar(p.b[p.i]) {
		p.i++
	}
	if p.i == start {
		p.fail("resp-text-code (atom)")
	}
	return string(p.b[start:p.i])
}

// event (RFC 5465): message-event / mailbox-event / user-event / event-ext;
// every name is an atom, and MessageNew may carry a fetch-att list.
func (p *parser) event() {
	name := p.atom()
	if strings.EqualFold(name, "MessageNew") && p.peek() == ' ' && p.peekAt(1) == '(' {
		p.sp()
		p.byte('(')
		p.fetchAtt()
		for p.peek() == ' ' {
			p.sp()
			p.fetchAtt()
		}
		p.byte(')')
	}
}

// fetchAtt reads a fetch-att (RFC 3501, RFC 7162 MODSEQ) in a BADEVENT
// MessageNew list.
func (p *parser) fetchAtt() {
	for _, w := range []string{"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ"} {
		if p.accept(w) {
			return
		}
	}
	if p.accept("RFC822") {
		return
	}
	if p.accept("BODY.PEEK") || p.accept("BODY") {
		if p.peek() != '[' {
			return
		}
		p.section()
		if p.peek() == '<' {
			p.i++
			p.number()
			p.byte('.')
			p.nzNumber()
			p.byte('>')
		}
		return
	}
	p.fail("fetch-att")
}

// sequenceSet reads sequence-set (RFC 3501).
func (p *parser) sequenceSet() {
	for {
		p.seqNumber()
		if p.peek() == ':' {
			p.i++
			p.seqNumber()
		}
		if p.peek() != ',' {
			return
		}
		p.i++
	}
}

func (p *parser) seqNumber() {
	if p.peek() == '*' {
		p.i++
		return
	}
	p.nzNumber()
}

// capabilityData: "CAPABILITY" *(SP capability) SP "IMAP4rev1"
// *(SP capability); capability = ("AUTH=" auth-type) / atom.
func (p *parser) capabilityData() {
	p.word("CAPABILITY")
	rev1 := false
	for p.peek() == ' ' {
		p.sp()
		c := p.atom()
		if strings.EqualFold(c, "IMAP4rev1") {
			rev1 = true
		}
		if len(c) == len("AUTH=") && strings.EqualFold(c, "AUTH=") {
			p.fail("auth-type after AUTH=")
		}
	}
	if !rev1 {
		p.fail(`SP "IMAP4rev1" among the capabilities`)
	}
}

// flagList: "(" [flag *(SP flag)] ")"; perm allows "\*" (flag-perm).
// Every flag-extension ("\" atom) is accepted, so \Recent passes too.
func (p *parser) flagList(perm bool) {
	p.byte('(')
	if p.peek() == ')' {
		p.i++
		return
	}
	for {
		p.flag(perm)
		if p.peek() != ' ' {
			break
		}
		p.sp()
	}
	p.byte(')')
}

func (p *parser) flag(perm bool) {
	if p.peek() == '\\' {
		p.i++
		if perm && p.peek() == '*' {
			p.i++
			return
		}
		if !p.peekAtIsAtom(0) {
			p.fail(`atom after "\" in a flag`)
		}
	}
	if !p.peekAtIsAtom(0) {
		p.fail("flag (atom or \"\\\" atom)")
	}
	p.atom()
}

// search: "SEARCH" *(SP nz-number) [SP "(" "MODSEQ" SP mod-sequence-value ")"].
func (p *parser) search() {
	for p.peek() == ' ' {
		p.sp()
		if p.peek() == '(' {
			p.i++
			p.word("MODSEQ")
			p.sp()
			p.modSeq(false)
			p.byte(')')
			return
		}
		p.nzNumber()
	}
}

// threadList (RFC 5256): "(" (thread-members / thread-nested) ")";
// thread-members = nz-number *(SP nz-number) [SP thread-nested];
// thread-nested = 2*thread-list.
func (p *parser) threadList() {
	p.byte('(')
	if p.peek() == '(' {
		p.threadNested()
	} else {
		p.nzNumber()
		for p.peek() == ' ' {
			p.sp()
			if p.peek() == '(' {
				p.threadNested()
				break
			}
			p.nzNumber()
		}
	}
	p.byte(')')
}

func (p *parser) threadNested() {
	start := p.i
	n := 0
	for p.peek() == '(' {
		p.threadList()
		n++
	}
	if n < 2 {
		p.failAt(start, "thread-nested (2*thread-list)")
	}
}

// statusData: mailbox SP "(" [status-att-list] ")".
func (p *parser) statusData() {
	p.mailbox()
	p.sp()
	p.byte('(')
	if p.peek() == ')' {
		p.i++
		return
	}
	for {
		switch {
		case p.accept("MESSAGES"), p.accept("RECENT"), p.accept("UIDNEXT"), p.accept("UIDVALIDITY"), p.accept("UNSEEN"):
			p.sp()
			p.number()
		case p.accept("HIGHESTMODSEQ"):
			p.sp()
			p.modSeq(true)
		default:
			p.fail("status-att (MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN or HIGHESTMODSEQ)")
		}
		if p.isAtomCharHere() {
			p.fail("SP or \")\" after a status value")
		}
		if p.peek() != ' ' {
			break
		}
		p.sp()
	}
	p.byte(')')
}

func (p *parser) isAtomCharHere() bool { return p.peekAtIsAtom(0) }

// mailboxList: "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil)
// SP mailbox [SP mbox-list-extended].
func (p *parser) mailboxList() {
	p.byte('(')
	sflags := 0
	for p.peek() != ')' {
		if p.b[p.i-1] != '(' {
			p.sp()
		}
		start := p.i
		if p.peek() != '\\' {
			p.fail(`mbx-list-flag ("\" atom)`)
		}
		p.i++
		if !p.peekAtIsAtom(0) {
			p.fail(`atom after "\" in a mailbox attribute`)
		}
		switch name := strings.ToLower(p.atom()); name {
		case "noselect", "marked", "unmarked", "nonexistent":
			if name == "nonexistent" && p.opts.Plain {
				break // RFC 3501 knows it only as a flag-extension
			}
			sflags++
			if sflags > 1 {
				p.failAt(start, `at most one of \Noselect, \Marked, \Unmarked, \NonExistent (mbx-list-sflag)`)
			}
		}
		if p.peek() != ' ' && p.peek() != ')' {
			p.fail(`SP or ")" after a mailbox attribute`)
		}
	}
	p.i++
	p.sp()
	if !p.isNil() {
		p.byte('"')
		switch c := p.peek(); {
		case c == '\\':
			if n := p.peekAt(1); n != '"' && n != '\\' {
				p.failAt(p.i+1, `quoted-specials after '\' in the delimiter`)
			}
			p.i += 2
		case c >= 0 && isTextChar(byte(c)) && c != '"':
			p.i++
		default:
			p.fail("QUOTED-CHAR (the hierarchy delimiter)")
		}
		p.byteNamed('"', `'"' closing the one-character delimiter`)
	}
	p.sp()
	p.mailbox()
	if p.peek() != ' ' {
		return
	}
	if p.opts.Plain {
		p.fail("CRLF (RFC 3501 LIST has no extended data; this client did not ask for LIST-EXTENDED or NOTIFY)")
	}
	p.sp()
	p.byte('(')
	if p.peek() == ')' {
		p.i++
		return
	}
	for {
		p.listExtendedItem()
		if p.peek() != ' ' {
			break
		}
		p.sp()
	}
	p.byte(')')
}

// listExtendedItem: mbox-list-extended-item-tag SP tagged-ext-val, with
// CHILDINFO (RFC 5258) and OLDNAME (RFC 5465) in their own grammar.
func (p *parser) listExtendedItem() {
	tag := strings.ToUpper(string(p.astring("mbox-list-extended-item-tag")))
	p.sp()
	switch tag {
	case "OLDNAME":
		p.byte('(')
		p.mailbox()
		p.byte(')')
	case "CHILDINFO":
		p.byte('(')
		for {
			p.byte('"')
			if !p.accept("SUBSCRIBED") {
				p.atom() // option-extension
			}
			p.byte('"')
			if p.peek() != ' ' {
				break
			}
			p.sp()
		}
		p.byte(')')
	default:
		p.taggedExtVal()
	}
}

// taggedExtVal (RFC 4466): tagged-ext-simple / "(" [tagged-ext-comp] ")".
func (p *parser) taggedExtVal() {
	if p.peek() != '(' {
		// tagged-ext-simple: sequence-set / number / number64
		if !isDigit(p.peek()) && p.peek() != '*' {
			p.fail(`tagged-ext-val (sequence-set, number or "(")`)
		}
		p.sequenceSetOrNumber()
		return
	}
	p.i++
	if p.peek() == ')' {
		p.i++
		return
	}
	p.taggedExtComp()
	p.byte(')')
}

func (p *parser) sequenceSetOrNumber() {
	if p.peek() == '0' && !isDigit(p.peekAt(1)) {
		p.i++
		return
	}
	p.sequenceSet()
}

// taggedExtComp: astring / tagged-ext-comp *(SP tagged-ext-comp) /
// "(" tagged-ext-comp ")".
func (p *parser) taggedExtComp() {
	for {
		if p.peek() == '(' {
			p.i++
			p.taggedExtComp()
			p.byte(')')
		} else {
			p.astring("tagged-ext-comp")
		}
		if p.peek() != ' ' {
			return
		}
		p.sp()
	}
}
