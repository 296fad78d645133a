// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"bytes"
	"fmt"
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
	}
}

// FetchLine returns the untagged FETCH response for the message with
// sequence number seq: UID first, then the items in the configured order:
//
//	S: * 3 FETCH (UID 9 FLAGS (\Seen $Label1) BODYSTRUCTURE (...))\r\n
//
// The items are formatted by go-imap v1 (imap.Message.Format and its Writer),
// so the bytes equal what maddy answers to "UID FETCH u (UID items...)" for
// the same message. (go-imap v1 writes body parameter lists in map order, so
// a part with two or more parameters comes out in either order there as
// here.) An item whose data is missing — nil BodyStructure or Envelope, zero
// InternalDate — is left out rather than written as invalid NIL; FLAGS with no
// flags is "FLAGS ()". d is not modified.
func FetchLine(seq uint32, d FetchData, items FetchItems) []byte {
	order := make([]imap.FetchItem, 0, len(items)+1)
	order = append(order, imap.FetchUid)
	for _, it := range items {
		item := imap.FetchItem(it)
		switch item {
		case imap.FetchBodyStructure:
			if d.BodyStructure == nil {
				continue
			}
		case imap.FetchEnvelope:
			if d.Envelope == nil {
				continue
			}
		case imap.FetchInternalDate:
			if d.InternalDate.IsZero() {
				continue
			}
		case imap.FetchFlags, imap.FetchRFC822Size:
		default:
			panic(fmt.Sprintf("mapping: unsupported FETCH item %q (build FetchItems with ParseFetchItems)", it))
		}
		order = append(order, item)
	}

	msg := imap.NewMessage(seq, order)
	msg.Uid = d.UID
	// A flag the store holds but IMAP cannot carry as an atom (go-imap v1
	// accepts such keywords in STORE) is left out rather than breaking the
	// client's parser.
	for _, f := range d.Flags {
		if validAttr(f) {
			msg.Flags = append(msg.Flags, f)
		}
	}
	if d.BodyStructure != nil {
		// Message.Format sets BodyStructure.Extended: format a copy.
		bs := *d.BodyStructure
		msg.BodyStructure = &bs
	}
	msg.Envelope = d.Envelope
	msg.InternalDate = d.InternalDate
	msg.Size = d.Size
	return formatFetch(msg)
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
// that session).
func FlagsFetchLine(seq, uid uint32, flags []string) []byte {
	msg := imap.NewMessage(seq, []imap.FetchItem{imap.FetchFlags, imap.FetchUid})
	msg.Flags = flags
	msg.Uid = uid
	return formatFetch(msg)
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
