// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/event"
)

func TestMailboxName(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"INBOX", `INBOX`},
		{"inbox", `INBOX`},
		{"Inbox", `INBOX`},
		{"iNbOx", `INBOX`},
		{"INBOX/Sub", `"INBOX/Sub"`},
		{"INBOXX", `"INBOXX"`},
		{"ınbox", `"&ATE-nbox"`}, // dotless i: not INBOX
		{"box", `"box"`},
		{"", `""`},
		{"with space", `"with space"`},
		{`say "hi"`, `"say \"hi\""`},
		{`back\slash`, `"back\\slash"`},
		{`\`, `"\\"`},
		{`"`, `"\""`},
		{"Entwürfe", `"Entw&APw-rfe"`},
		{"&", `"&-"`},
		{"R&D", `"R&-D"`},
		{"&Jjo-", `"&-Jjo-"`}, // a name that looks like UTF-7 is escaped, not decoded
		{"~peter/mail/台北/日本語", `"~peter/mail/&U,BTFw-/&ZeVnLIqe-"`}, // RFC 3501 5.1.3 example
		{"😀", `"&2D3eAA-"`},                             // astral plane: surrogate pair
		{"tab\there", `"tab&AAk-here"`},                 // controls are base64-encoded
		{"cr\rlf\nnul\x00", `"cr&AA0-lf&AAo-nul&AAA-"`}, // so even CR, LF and NUL stay quoted
		{"del\x7f", `"del&AH8-"`},
		{"bad\xffutf8", `"bad&,,0-utf8"`}, // invalid UTF-8 becomes U+FFFD
		{"a%b*c(d)e{f}g]h", `"a%b*c(d)e{f}g]h"`},
	}
	for _, tt := range tests {
		if got := string(MailboxName(tt.in)); got != tt.want {
			t.Errorf("MailboxName(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestAppendString covers the literal form, which modified UTF-7 output never
// needs but appendString must still produce for 8-bit or CR/LF/NUL bytes.
func TestAppendString(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", `""`},
		{"plain", `"plain"`},
		{`q"b\`, `"q\"b\\"`},
		{"a\rb", "{3}\r\na\rb"},
		{"a\nb", "{3}\r\na\nb"},
		{"a\x00b", "{3}\r\na\x00b"},
		{"ü", "{2}\r\nü"},
		{"tab\tok", "\"tab\tok\""}, // TAB is a legal QUOTED-CHAR
	}
	for _, tt := range tests {
		if got := string(appendString(nil, tt.in)); got != tt.want {
			t.Errorf("appendString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCheckMailboxName: event.CheckMailboxName, the check of the names
// mapping is given, accepts every name IMAP can carry and refuses the
// rest with an error of its package.
func TestCheckMailboxName(t *testing.T) {
	for _, ok := range []string{"INBOX", "a", "Entwürfe", `"\`, " ", "&", "😀", "a\tb"} {
		if err := event.CheckMailboxName(ok); err != nil {
			t.Errorf("CheckMailboxName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "a\rb", "a\nb", "a\x00b", "\xff", "a\xc3"} {
		if err := event.CheckMailboxName(bad); err == nil {
			t.Errorf("CheckMailboxName(%q) = nil, want error", bad)
		} else if !strings.HasPrefix(err.Error(), "event: ") {
			t.Errorf("CheckMailboxName(%q) error %q lacks the package prefix", bad, err)
		}
	}
}

func TestSameMailbox(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"INBOX", "inbox", true},
		{"Inbox", "INBOX", true},
		{"box", "box", true},
		{"box", "Box", false},
		{"INBOX/a", "inbox/a", false},
		{"", "", true},
		{"INBOX", "", false},
	}
	for _, tt := range tests {
		if got := SameMailbox(tt.a, tt.b); got != tt.want {
			t.Errorf("SameMailbox(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
