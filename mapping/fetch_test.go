// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap"

	"github.com/maddy-notify/maddy-notify/internal/imapsyntax"
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

// The parts of a multipart follow each other without a space (RFC 3501
// "1*body SP media-subtype"; go-imap v1, and so maddy's own FETCH, write
// one). The parts have no extension data: their Extended is false.
const testBodyStructureWire = `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1152 23)` +
	`("text" "plain" ("name" "trip.txt") "<960723163407.20117h@washington.example.com>" "Your trip details" "base64" 4554 73)` +
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
			`* 4 FETCH (UID 7 BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 11 1 NIL NIL NIL NIL))` + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := FetchLine(tt.seq, tt.d, tt.items)
			if got := string(line); got != tt.want {
				t.Errorf("FetchLine\n got %q\nwant %q", got, tt.want)
			}
			strict(t, line, true)
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
	FetchLine(1, FetchData{UID: 1}, FetchItems{"BOGUS"})
}

// A body section is an item FetchLine writes (a NOTIFY client asks for
// it); without the data it is left out.
func TestFetchLineBodySectionWithoutData(t *testing.T) {
	if got := string(FetchLine(1, FetchData{UID: 1}, FetchItems{"BODY[]"})); got != "* 1 FETCH (UID 1)\r\n" {
		t.Fatalf("FetchLine = %q", got)
	}
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
		line := FlagsFetchLine(tt.seq, tt.uid, tt.flags)
		if got := string(line); got != tt.want {
			t.Errorf("FlagsFetchLine(%d, %d, %q)\n got %q\nwant %q", tt.seq, tt.uid, tt.flags, got, tt.want)
		}
		strict(t, line, true)
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

// TestFetchLineRFC3501: the BODYSTRUCTURE and ENVELOPE forms go-imap v1
// gets wrong, each written in RFC 3501 syntax, byte for byte, and each line
// passing the strict checker.
func TestFetchLineRFC3501(t *testing.T) {
	text := func(enc string, params map[string]string) *imap.BodyStructure {
		return &imap.BodyStructure{MIMEType: "text", MIMESubType: "plain", Params: params, Encoding: enc, Size: 11, Lines: 1, Extended: true}
	}
	date := time.Date(2024, 5, 17, 10, 11, 12, 0, time.UTC)
	tests := []struct {
		name string
		d    FetchData
		want string // after "* 1 FETCH (UID 5 "
	}{
		{"no Content-Transfer-Encoding, no parameters",
			FetchData{BodyStructure: text("", nil)},
			`BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)`},
		{"empty parameter map",
			FetchData{BodyStructure: text("quoted-printable", map[string]string{})},
			`BODYSTRUCTURE ("text" "plain" NIL NIL NIL "quoted-printable" 11 1 NIL NIL NIL NIL)`},
		{"parameters sorted by name",
			FetchData{BodyStructure: text("7bit", map[string]string{"format": "flowed", "charset": "utf-8", "delsp": "yes"})},
			`BODYSTRUCTURE ("text" "plain" ("charset" "utf-8" "delsp" "yes" "format" "flowed") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)`},
		{"attachment with disposition",
			FetchData{BodyStructure: &imap.BodyStructure{
				MIMEType: "application", MIMESubType: "pdf", Params: map[string]string{"name": "a.pdf"},
				Id: "<part1@x>", Description: "Bericht für Jänner", Encoding: "base64", Size: 1024, Extended: true,
				Disposition: "attachment", DispositionParams: map[string]string{"filename": "a.pdf", "size": "768"},
				MD5: "Q2hlY2sgSW50ZWdyaXR5IQ==", Language: []string{"de", "en"}, Location: []string{"http://x.example/a.pdf"},
			}},
			`BODYSTRUCTURE ("application" "pdf" ("name" "a.pdf") "<part1@x>" "=?utf-8?q?Bericht_f=C3=BCr_J=C3=A4nner?=" "base64" 1024` +
				` "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "a.pdf" "size" "768")) ("de" "en") "http://x.example/a.pdf")`},
		{"disposition without parameters, empty language list",
			FetchData{BodyStructure: &imap.BodyStructure{
				MIMEType: "image", MIMESubType: "png", Encoding: "base64", Size: 3, Extended: true,
				Disposition: "inline", DispositionParams: map[string]string{}, Language: []string{}, Location: []string{},
			}},
			`BODYSTRUCTURE ("image" "png" NIL NIL NIL "base64" 3 NIL ("inline" NIL) NIL NIL)`},
		{"multipart: no SP between parts, extension data per part",
			FetchData{BodyStructure: &imap.BodyStructure{
				MIMEType: "multipart", MIMESubType: "mixed", Params: map[string]string{"boundary": "b1"}, Extended: true,
				Parts: []*imap.BodyStructure{
					text("", map[string]string{"charset": "us-ascii"}),
					{MIMEType: "application", MIMESubType: "octet-stream", Encoding: "base64", Size: 4, Extended: true,
						Disposition: "attachment", DispositionParams: map[string]string{"filename": "x.bin"}},
					{MIMEType: "multipart", MIMESubType: "alternative", Extended: true, Parts: []*imap.BodyStructure{
						text("8bit", nil), {MIMEType: "text", MIMESubType: "html", Encoding: "8bit", Size: 20, Lines: 2}}},
				},
			}},
			`BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 11 1 NIL NIL NIL NIL)` +
				`("application" "octet-stream" NIL NIL NIL "base64" 4 NIL ("attachment" ("filename" "x.bin")) NIL NIL)` +
				`(("text" "plain" NIL NIL NIL "8bit" 11 1 NIL NIL NIL NIL)("text" "html" NIL NIL NIL "8bit" 20 2) "alternative" NIL NIL NIL NIL)` +
				` "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"multipart without parts",
			FetchData{BodyStructure: &imap.BodyStructure{MIMEType: "multipart", MIMESubType: "mixed", Extended: true}},
			`BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7BIT" 0 0) "mixed" NIL NIL NIL NIL)`},
		{"message/rfc822",
			FetchData{BodyStructure: &imap.BodyStructure{
				MIMEType: "message", MIMESubType: "rfc822", Encoding: "7bit", Size: 300, Lines: 9, Extended: true,
				Envelope: &imap.Envelope{Date: date, Subject: "inner", From: []*imap.Address{{MailboxName: "a", HostName: "x"}},
					To: []*imap.Address{{PersonalName: "B", MailboxName: "b", HostName: "y"}, {MailboxName: "c", HostName: "z"}}},
				BodyStructure: text("", nil),
			}},
			`BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7bit" 300 ("Fri, 17 May 2024 10:11:12 +0000" "inner" ((NIL NIL "a" "x")) NIL NIL` +
				` (("B" NIL "b" "y")(NIL NIL "c" "z")) NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7BIT" 11 1 NIL NIL NIL NIL) 9 NIL NIL NIL NIL)`},
		{"message/rfc822 without envelope and body",
			FetchData{BodyStructure: &imap.BodyStructure{MIMEType: "message", MIMESubType: "rfc822", Size: 0, Extended: true}},
			`BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7BIT" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7BIT" 0 0) 0 NIL NIL NIL NIL)`},
		{"no media type: text/plain",
			FetchData{BodyStructure: &imap.BodyStructure{Size: 2, Lines: 1}},
			`BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7BIT" 2 1 NIL NIL NIL NIL)`},
		{"8-bit and NUL in header values",
			FetchData{BodyStructure: &imap.BodyStructure{MIMEType: "text", MIMESubType: "plain", Id: "<ü@x>", Encoding: "7b\x00it", Size: 1, Extended: true}},
			"BODYSTRUCTURE (\"text\" \"plain\" NIL {6}\r\n<\xc3\xbc@x> NIL \"7bit\" 1 0 NIL NIL NIL NIL)"},
		{"envelope: address lists without SP, empty lists NIL, encoded names",
			FetchData{Envelope: &imap.Envelope{
				Date: date, Subject: "Grüße",
				From:      []*imap.Address{{PersonalName: "Jörg", MailboxName: "j", HostName: "x.example"}},
				Sender:    []*imap.Address{},
				To:        []*imap.Address{{MailboxName: "a", HostName: "x"}, nil, {MailboxName: "b", HostName: "y", AtDomainList: "@relay"}},
				Cc:        []*imap.Address{nil},
				InReplyTo: "<0@x>", MessageId: "<1@x>",
			}},
			`ENVELOPE ("Fri, 17 May 2024 10:11:12 +0000" "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" (("=?utf-8?q?J=C3=B6rg?=" NIL "j" "x.example")) NIL NIL` +
				` ((NIL NIL "a" "x")(NIL "@relay" "b" "y")) NIL NIL "<0@x>" "<1@x>")`},
		{"empty envelope",
			FetchData{Envelope: &imap.Envelope{}},
			`ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.d.UID = 5
			items := FetchItems{"BODYSTRUCTURE"}
			if tt.d.Envelope != nil {
				items = FetchItems{"ENVELOPE"}
			}
			line := FetchLine(1, tt.d, items)
			if want := "* 1 FETCH (UID 5 " + tt.want + ")\r\n"; string(line) != want {
				t.Errorf("FetchLine\n got %q\nwant %q", line, want)
			}
			if err := imapsyntax.CheckResponse(line); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestFetchLineNotifyItems: a NOTIFY client's MessageNew fetch-att list
// (body sections, RFC822.*, BODY) is written after UID, in its order, as
// RFC 3501 syntax; UID is not repeated.
func TestFetchLineNotifyItems(t *testing.T) {
	header := "Subject: hi\r\n\r\n"
	msg := imap.NewMessage(4, nil)
	msg.Uid = 9
	msg.Flags = []string{`\Seen`}
	for _, it := range []string{"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "RFC822.HEADER"} {
		name, err := imap.ParseBodySectionName(imap.FetchItem(it))
		if err != nil {
			t.Fatalf("%s: %v", it, err)
		}
		msg.Body[name] = bytes.NewBufferString(header)
	}
	items := NotifyFetchItems([]imap.FetchItem{imap.FetchUid, imap.FetchFlags, "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "RFC822.HEADER", imap.FetchRFC822Size})
	msg.Size = 42
	got := string(FetchLine(4, FetchDataOf(msg), items))
	want := "* 4 FETCH (UID 9 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {15}\r\n" + header + " RFC822.HEADER {15}\r\n" + header + " RFC822.SIZE 42)\r\n"
	if got != want {
		t.Fatalf("FetchLine:\n got %q\nwant %q", got, want)
	}
	strict(t, []byte(got), true)
}
