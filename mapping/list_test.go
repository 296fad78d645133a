// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import "testing"

func TestListLine(t *testing.T) {
	tests := []struct {
		name    string
		attrs   []string
		delim   string
		mailbox string
		oldName string
		want    string
	}{
		{"create", []string{`\HasNoChildren`}, "/", "box", "", `* LIST (\HasNoChildren) "/" "box"` + "\r\n"},
		{"no attrs", nil, "/", "box", "", `* LIST () "/" "box"` + "\r\n"},
		{"empty attrs", []string{}, ".", "box", "", `* LIST () "." "box"` + "\r\n"},
		{"NIL delimiter", []string{`\Noselect`}, "", "box", "", `* LIST (\Noselect) NIL "box"` + "\r\n"},
		{"several attrs, keyword dropped", []string{`\HasChildren`, `\Sent`, `$Custom`}, "/", "Sent", "", `* LIST (\HasChildren \Sent) "/" "Sent"` + "\r\n"},
		{"one selectability attribute", []string{`\Noselect`, `\HasChildren`, `\NonExistent`, `\marked`}, "/", "b", "", `* LIST (\Noselect \HasChildren) "/" "b"` + "\r\n"},
		{"invalid attrs dropped", []string{"", `\Has Space`, `\\x`, `\Marked`, `(`, "\\\u00e4"}, "/", "b", "", `* LIST (\Marked) "/" "b"` + "\r\n"},
		{"INBOX atom", nil, "/", "inbox", "", `* LIST () "/" INBOX` + "\r\n"},
		{"non-ASCII", nil, "/", "Entwürfe", "", `* LIST () "/" "Entw&APw-rfe"` + "\r\n"},
		{"spaces and quotes", nil, "/", `My "Box" \1`, "", `* LIST () "/" "My \"Box\" \\1"` + "\r\n"},
		{"ampersand", nil, "/", "&", "", `* LIST () "/" "&-"` + "\r\n"},
		{"delete", []string{AttrNonExistent}, "/", "box", "", `* LIST (\NonExistent) "/" "box"` + "\r\n"},
		{"rename", nil, "/", "new", "old", `* LIST () "/" "new" ("OLDNAME" ("old"))` + "\r\n"},
		{"rename non-ASCII, INBOX", []string{`\HasNoChildren`}, "/", "Entwürfe", "INBOX", `* LIST (\HasNoChildren) "/" "Entw&APw-rfe" ("OLDNAME" (INBOX))` + "\r\n"},
		{"rename NIL delimiter", nil, "", "a b", `c"d`, `* LIST () NIL "a b" ("OLDNAME" ("c\"d"))` + "\r\n"},
		{"quote delimiter", nil, `"`, "a", "", `* LIST () "\"" "a"` + "\r\n"},
		{"backslash delimiter", nil, `\`, "a", "", `* LIST () "\\" "a"` + "\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := ListLine(tt.attrs, tt.delim, tt.mailbox, tt.oldName)
			if got := string(line); got != tt.want {
				t.Errorf("ListLine(%q, %q, %q, %q)\n got %q\nwant %q", tt.attrs, tt.delim, tt.mailbox, tt.oldName, got, tt.want)
			}
			strict(t, line, tt.oldName == "")
		})
	}
}

func TestSubscriptionAttrs(t *testing.T) {
	tests := []struct {
		in         []string
		subscribed bool
		want       string
	}{
		{nil, true, `[\Subscribed]`},
		{nil, false, `[]`},
		{[]string{`\HasNoChildren`}, true, `[\HasNoChildren \Subscribed]`},
		{[]string{`\subscribed`, `\HasNoChildren`}, true, `[\HasNoChildren \Subscribed]`},
		{[]string{`\Subscribed`, `\HasNoChildren`}, false, `[\HasNoChildren]`},
	}
	for _, tt := range tests {
		got := SubscriptionAttrs(tt.in, tt.subscribed)
		if s := fmtSlice(got); s != tt.want {
			t.Errorf("SubscriptionAttrs(%q, %v) = %s, want %s", tt.in, tt.subscribed, s, tt.want)
		}
	}
	in := []string{`\Subscribed`, `\A`}
	SubscriptionAttrs(in, false)
	if in[0] != `\Subscribed` || in[1] != `\A` {
		t.Errorf("subscriptionAttrs modified its argument: %q", in)
	}
	if got := fmtSlice(WithoutSubscribed([]string{`\HasChildren`, `\SUBSCRIBED`})); got != `[\HasChildren]` {
		t.Errorf("WithoutSubscribed = %s, want [\\HasChildren]", got)
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
