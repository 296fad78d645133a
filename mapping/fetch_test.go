// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap"
)

// testBodyStructure is the draft's 3.1 example, with one parameter per list
// (go-imap v1 writes parameter lists in map order).
func testBodyStructure() *imap.BodyStructure {
	return &imap.BodyStructure{
		MIMEType:    "multipart",
		MIMESubType: "mixed",
		Parts: []*imap.BodyStructure{
			{
				MIMEType: "text", MIMESubType: "plain",
				Params:   map[string]string{"charset": "us-ascii"},
				Encoding: "7bit", Size: 1152, Lines: 23,
			},
			{
				MIMEType: "text", MIMESubType: "plain",
				Params:      map[string]string{"name": "trip.txt"},
				Id:          "<960723163407.20117h@washington.example.com>",
				Description: "Your trip details",
				Encoding:    "base64", Size: 4554, Lines: 73,
			},
		},
	}
}

// go-imap v1 separates the parts of a multipart with a space, which RFC 3501
// ("1*body SP media-subtype") does not have; maddy sends it so, and so do we.
const testBodyStructureWire = `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1152 23)` +
	` ("text" "plain" ("name" "trip.txt") "<960723163407.20117h@washington.example.com>" "Your trip details" "base64" 4554 73)` +
	` "mixed" NIL NIL NIL NIL)`

func TestParseFetchItems(t *testing.T) {
	tests := []struct {
		in      []string
		want    FetchItems
		wantErr string
	}{
		{nil, FetchItems{}, ""},
		{[]string{"FLAGS", "BODYSTRUCTURE"}, FetchItems{"FLAGS", "BODYSTRUCTURE"}, ""},
		{[]string{"uid", "bodystructure", "Flags"}, FetchItems{"BODYSTRUCTURE", "FLAGS"}, ""},
		{[]string{"ENVELOPE", "INTERNALDATE", "RFC822.SIZE"}, FetchItems{"ENVELOPE", "INTERNALDATE", "RFC822.SIZE"}, ""},
		{[]string{"BODY[]"}, nil, "unsupported FETCH item"},
		{[]string{"FLAGS", "flags"}, nil, "duplicate FETCH item FLAGS"},
	}
	for _, tt := range tests {
		got, err := ParseFetchItems(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseFetchItems(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseFetchItems(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
	req := FetchItems{"FLAGS", "BODYSTRUCTURE"}.Request()
	if !reflect.DeepEqual(req, []imap.FetchItem{imap.FetchUid, imap.FetchFlags, imap.FetchBodyStructure}) {
		t.Errorf("Request() = %v", req)
	}
}

func TestFetchLine(t *testing.T) {
	date := time.Date(2024, 5, 17, 10, 11, 12, 0, time.FixedZone("", 2*3600))
	full := FetchData{
		UID:           9,
		Flags:         []string{`\Seen`, "$Label1"},
		BodyStructure: testBodyStructure(),
		Envelope: &imap.Envelope{
			Date:      date,
			Subject:   "Hi",
			From:      []*imap.Address{{PersonalName: "Ann", MailboxName: "ann", HostName: "example.org"}},
			MessageId: "<1@example.org>",
		},
		InternalDate: date,
		Size:         4321,
	}
	tests := []struct {
		name  string
		seq   uint32
		d     FetchData
		items FetchItems
		want  string
	}{
		{"UID only", 3, full, FetchItems{}, `* 3 FETCH (UID 9)` + "\r\n"},
		{"draft default", 3, full, FetchItems{"FLAGS", "BODYSTRUCTURE"},
			`* 3 FETCH (UID 9 FLAGS (\Seen $Label1) BODYSTRUCTURE ` + testBodyStructureWire + ")\r\n"},
		{"configured order kept", 161, full, FetchItems{"BODYSTRUCTURE", "FLAGS"},
			`* 161 FETCH (UID 9 BODYSTRUCTURE ` + testBodyStructureWire + ` FLAGS (\Seen $Label1))` + "\r\n"},
		{"date and size", 1, full, FetchItems{"INTERNALDATE", "RFC822.SIZE"},
			`* 1 FETCH (UID 9 INTERNALDATE "17-May-2024 10:11:12 +0200" RFC822.SIZE 4321)` + "\r\n"},
		{"envelope", 1, full, FetchItems{"ENVELOPE"},
			`* 1 FETCH (UID 9 ENVELOPE ("Fri, 17 May 2024 10:11:12 +0200" "Hi" (("Ann" NIL "ann" "example.org")) NIL NIL NIL NIL NIL NIL "<1@example.org>"))` + "\r\n"},
		{"no flags", 2, FetchData{UID: 5}, FetchItems{"FLAGS"}, `* 2 FETCH (UID 5 FLAGS ())` + "\r\n"},
		{"missing data left out", 2, FetchData{UID: 5}, FetchItems{"BODYSTRUCTURE", "ENVELOPE", "INTERNALDATE", "RFC822.SIZE"},
			`* 2 FETCH (UID 5 RFC822.SIZE 0)` + "\r\n"},
		{"single part", 4, FetchData{UID: 7, BodyStructure: &imap.BodyStructure{MIMEType: "text", MIMESubType: "plain", Encoding: "7bit", Size: 11, Lines: 1}}, FetchItems{"BODYSTRUCTURE"},
			`* 4 FETCH (UID 7 BODYSTRUCTURE ("text" "plain" () NIL NIL "7bit" 11 1 NIL NIL NIL NIL))` + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(FetchLine(tt.seq, tt.d, tt.items)); got != tt.want {
				t.Errorf("FetchLine\n got %q\nwant %q", got, tt.want)
			}
		})
	}

	// FetchLine must not modify its input (go-imap's Message.Format sets
	// BodyStructure.Extended).
	bs := testBodyStructure()
	FetchLine(1, FetchData{UID: 1, BodyStructure: bs}, FetchItems{"BODYSTRUCTURE"})
	if !reflect.DeepEqual(bs, testBodyStructure()) {
		t.Error("FetchLine modified the BodyStructure it was given")
	}
}

func TestFetchLineUnsupportedItemPanics(t *testing.T) {
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.HasPrefix(s, "mapping: ") {
			t.Fatalf("recover() = %v, want a mapping: panic", r)
		}
	}()
	FetchLine(1, FetchData{UID: 1}, FetchItems{"BODY[]"})
}

func TestFlagsFetchLine(t *testing.T) {
	tests := []struct {
		seq, uid uint32
		flags    []string
		want     string
	}{
		{3, 9, []string{`\Seen`}, `* 3 FETCH (FLAGS (\Seen) UID 9)` + "\r\n"},
		{1, 1, []string{`\Seen`, `\Answered`, "$Label1", `\Recent`}, `* 1 FETCH (FLAGS (\Seen \Answered $Label1 \Recent) UID 1)` + "\r\n"},
		{7, 12, nil, `* 7 FETCH (FLAGS () UID 12)` + "\r\n"},
	}
	for _, tt := range tests {
		if got := string(FlagsFetchLine(tt.seq, tt.uid, tt.flags)); got != tt.want {
			t.Errorf("FlagsFetchLine(%d, %d, %q)\n got %q\nwant %q", tt.seq, tt.uid, tt.flags, got, tt.want)
		}
	}
}

func TestFetchDataOf(t *testing.T) {
	date := time.Unix(1700000000, 0)
	m := imap.NewMessage(3, []imap.FetchItem{imap.FetchUid})
	m.Uid, m.Flags, m.BodyStructure, m.InternalDate, m.Size = 9, []string{`\Seen`}, testBodyStructure(), date, 10
	m.Envelope = &imap.Envelope{Subject: "s"}
	d := FetchDataOf(m)
	if d.UID != 9 || !reflect.DeepEqual(d.Flags, m.Flags) || d.BodyStructure != m.BodyStructure || d.Envelope != m.Envelope || !d.InternalDate.Equal(date) || d.Size != 10 {
		t.Errorf("FetchDataOf = %+v", d)
	}
}
