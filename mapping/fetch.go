// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap"
)

var knownFetchItems = []string{
	string(imap.FetchFlags),
	string(imap.FetchBodyStructure),
	string(imap.FetchEnvelope),
	string(imap.FetchInternalDate),
	string(imap.FetchRFC822Size),
}

// FetchItems is the list of FETCH data items a session is sent for each new
// message of its selected mailbox, after UID (which is always sent, first:
// draft-melnikov-lemonade-imap-events 3.1). Empty means no FETCH at all.
// Build it with ParseFetchItems.
type FetchItems []string

// ParseFetchItems checks and canonicalises configured FETCH items: each one
// of FLAGS, BODYSTRUCTURE, ENVELOPE, INTERNALDATE, RFC822.SIZE (any case),
// without duplicates. UID may be listed and is dropped (it is always sent
// first). An empty list is valid: no FETCH for new messages.
func ParseFetchItems(items []string) (FetchItems, error) {
	out := make(FetchItems, 0, len(items))
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		up := strings.ToUpper(it)
		if up == string(imap.FetchUid) {
			continue
		}
		if !isFetchItem(up) {
			return nil, fmt.Errorf("mapping: unsupported FETCH item %q (supported: UID %s)", it, strings.Join(knownFetchItems, " "))
		}
		if seen[up] {
			return nil, fmt.Errorf("mapping: duplicate FETCH item %s", up)
		}
		seen[up] = true
		out = append(out, up)
	}
	return out, nil
}

func isFetchItem(s string) bool {
	for _, k := range knownFetchItems {
		if s == k {
			return true
		}
	}
	return false
}

// Request returns what the caller asks the store for (backend.Mailbox
// ListMessages) to build the FETCH lines: UID, then the items. The slice is
// new on every call.
func (items FetchItems) Request() []imap.FetchItem {
	out := make([]imap.FetchItem, 0, len(items)+1)
	out = append(out, imap.FetchUid)
	for _, it := range items {
		out = append(out, imap.FetchItem(it))
	}
	return out
}

// FetchData is what a FETCH line can report about one message.
type FetchData struct {
	UID           uint32
	Flags         []string
	BodyStructure *imap.BodyStructure
	Envelope      *imap.Envelope
	InternalDate  time.Time
	Size          uint32
	// Msg is the message as the store returned it, for the items a
	// NOTIFY client may ask for beyond those above (BODY[...], RFC822.*);
	// nil when there are none.
	Msg *imap.Message
}

// FetchDataOf takes the data from a message as go-imap v1's
// backend.Mailbox.ListMessages returns it. It shares the slices and pointers
// of m; FetchLine does not modify them.
func FetchDataOf(m *imap.Message) FetchData {
	return FetchData{
		UID:           m.Uid,
		Flags:         m.Flags,
		BodyStructure: m.BodyStructure,
		Envelope:      m.Envelope,
		InternalDate:  m.InternalDate,
		Size:          m.Size,
		Msg:           m,
	}
}

// NotifyFetchItems returns the FETCH items of a NOTIFY client's MessageNew
// fetch-att list (mapping.Match.Fetch) as FetchItems: UID is dropped (it
// always comes first) and every other item is kept in the client's order.
// The items are go-imap v1's parse of a fetch-att, which FetchLine writes.
//
// The result is never nil: a list of UID alone is a FETCH of UID alone.
func NotifyFetchItems(atts []imap.FetchItem) FetchItems {
	out := make(FetchItems, 0, len(atts))
	for _, it := range atts {
		if it == imap.FetchUid {
			continue
		}
		out = append(out, string(it))
	}
	return out
}

// FetchLine returns the untagged FETCH response for the message with
// sequence number seq: UID first, then the items in the configured order:
//
//	S: * 3 FETCH (UID 9 FLAGS (\Seen $Label1) BODYSTRUCTURE (...))\r\n
//
// Every line is RFC 3501 section 9 syntax (checked by internal/imapsyntax
// in the tests). The values are go-imap v1's (the data maddy's own FETCH
// answers with), but the BODYSTRUCTURE and ENVELOPE are written by this
// package, not by go-imap v1, whose forms a strict client rejects (body.go
// lists them): so the line differs from maddy's answer to "UID FETCH u
// (UID items...)" exactly where that answer is not RFC 3501 syntax, and
// in the order of body parameters (sorted here, map order there). An item
// whose data is missing — nil BodyStructure or Envelope, zero
// InternalDate — is left out rather than written as invalid NIL; FLAGS
// with no flags is "FLAGS ()"; a flag that is not an atom (optionally
// after one backslash) is left out. seq and d.UID must not be 0 (IMAP has
// no message 0). d is not modified.
func FetchLine(seq uint32, d FetchData, items FetchItems) []byte {
	b := make([]byte, 0, 64)
	b = append(b, "* "...)
	b = strconv.AppendUint(b, uint64(seq), 10)
	b = append(b, " FETCH (UID "...)
	b = strconv.AppendUint(b, uint64(d.UID), 10)
	for _, it := range items {
		switch imap.FetchItem(it) {
		case imap.FetchFlags:
			b = append(b, " FLAGS ("...)
			first := true
			for _, f := range d.Flags {
				// A flag the store holds but IMAP cannot carry as an
				// atom (go-imap v1 accepts such keywords in STORE) is
				// left out rather than breaking the client's parser.
				if !validAttr(f) {
					continue
				}
				if !first {
					b = append(b, ' ')
				}
				first = false
				b = append(b, f...)
			}
			b = append(b, ')')
		case imap.FetchBodyStructure:
			if d.BodyStructure != nil {
				b = append(b, " BODYSTRUCTURE "...)
				b = appendBody(b, d.BodyStructure, true)
			}
		case imap.FetchEnvelope:
			if d.Envelope != nil {
				b = append(b, " ENVELOPE "...)
				b = appendEnvelope(b, d.Envelope)
			}
		case imap.FetchInternalDate:
			if !d.InternalDate.IsZero() {
				b = append(b, " INTERNALDATE "...)
				b = appendDateTime(b, d.InternalDate)
			}
		case imap.FetchRFC822Size:
			b = append(b, " RFC822.SIZE "...)
			b = strconv.AppendUint(b, uint64(d.Size), 10)
		case imap.FetchBody:
			if d.BodyStructure != nil {
				b = append(b, " BODY "...)
				b = appendBody(b, d.BodyStructure, false)
			}
		default:
			// Body sections and RFC822.*, asked by a NOTIFY client
			// (NotifyFetchItems): written as go-imap v1 writes them for
			// FETCH, a literal for the data.
			if _, err := imap.ParseBodySectionName(imap.FetchItem(it)); err != nil {
				panic(fmt.Sprintf("mapping: unsupported FETCH item %q (build FetchItems with ParseFetchItems or NotifyFetchItems)", it))
			}
			if item := formatItem(seq, d.Msg, imap.FetchItem(it)); item != nil {
				b = append(b, ' ')
				b = append(b, item...)
			}
		}
	}
	return append(b, ")\r\n"...)
}

// FlagsFetchLine returns the FETCH response stock maddy sends to a session
// whose selected mailbox had a message's flags changed by someone else:
//
//	S: * 3 FETCH (FLAGS (\Seen) UID 9)\r\n
//
// FLAGS comes before UID: go-imap-mess (MailboxHandle.Sync) builds the update
// as imap.NewMessage(seq, []imap.FetchItem{imap.FetchFlags, imap.FetchUid})
// and go-imap v1's server writes it with responses.Fetch; this function goes
// through the same code, so the bytes are the same. flags are written as
// given (go-imap-mess appends \Recent itself when the message is recent for
// that session), so, as the store's, the line is not RFC 3501 syntax when a
// flag is not an atom. storage.notify never writes it: it is the reference
// for the store's line in tests.
func FlagsFetchLine(seq, uid uint32, flags []string) []byte {
	msg := imap.NewMessage(seq, []imap.FetchItem{imap.FetchFlags, imap.FetchUid})
	msg.Flags = flags
	msg.Uid = uid
	return formatFetch(msg)
}

// formatItem returns one data item of msg, a body section or RFC822.*
// (its name and value, as go-imap v1's FETCH writes them: the data as a
// literal), or nil when msg lacks it. Its literal is read.
func formatItem(seq uint32, msg *imap.Message, item imap.FetchItem) []byte {
	if msg == nil {
		return nil
	}
	found := false
	for section := range msg.Body {
		found = found || section.FetchItem() == item
	}
	if !found {
		return nil // not an item this module can write, or not read
	}
	one := imap.NewMessage(seq, []imap.FetchItem{item})
	one.Body = msg.Body
	line := formatFetch(one)
	prefix := []byte("* " + strconv.FormatUint(uint64(seq), 10) + " FETCH (")
	if !bytes.HasPrefix(line, prefix) || !bytes.HasSuffix(line, []byte(")\r\n")) || len(line) <= len(prefix)+3 {
		return nil
	}
	return line[len(prefix) : len(line)-3]
}

// formatFetch writes msg exactly as go-imap v1's responses.Fetch.WriteTo does.
func formatFetch(msg *imap.Message) []byte {
	var buf bytes.Buffer
	resp := imap.NewUntaggedResp([]interface{}{msg.SeqNum, imap.RawString("FETCH"), msg.Format()})
	if err := resp.WriteTo(imap.NewWriter(&buf)); err != nil {
		// Writing to a bytes.Buffer fails only on a value go-imap cannot
		// format, which Message.Format does not produce.
		panic(fmt.Sprintf("mapping: formatting FETCH: %v", err))
	}
	return buf.Bytes()
}
