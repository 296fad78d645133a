// SPDX-License-Identifier: GPL-3.0-or-later

package notifycmd

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-imap"
)

// FuzzParse: whatever a client sends, Parse does not panic, refuses with an
// *Error of type BAD or NO, and what it accepts is valid, supported, and
// written back by String into a command that parses to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"a NOTIFY NONE",
		"a NOTIFY SET STATUS (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge)) (subtree Lists (MessageNew MessageExpunge))",
		"a NOTIFY SET (selected (MessageNew (UID RFC822.SIZE RFC822.HEADER FLAGS) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))",
		"a NOTIFY SET (STATUS) ((INBOX \"Sent\") (MessageNew MessageExpunge FlagChange)) (PERSONAL)",
		"a NOTIFY SET (mailboxes ({5}\r\nhello \"Caf&AOk-\" NIL) NONE) (personal (AnnotationChange MessageNew MessageExpunge))",
		"a NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (Foo))",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r := imap.NewReader(bufio.NewReader(strings.NewReader(line + "\r\n")))
		r.MaxLiteralSize = 1 << 16
		raw, err := r.ReadLine()
		if err != nil {
			return
		}
		var cmd imap.Command
		if cmd.Parse(raw) != nil {
			return
		}
		in, err := Parse(cmd.Arguments)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Type != imap.StatusRespBad && e.Type != imap.StatusRespNo) {
				t.Fatalf("Parse(%q) error %#v", line, err)
			}
			return
		}
		if err := in.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid request: %v", line, err)
		}
		if u := in.Unsupported(); u != 0 {
			t.Fatalf("Parse(%q) accepted unsupported events %v", line, u)
		}
		again, err := Parse(fields(t, "a NOTIFY "+in.String()))
		if err != nil || !reflect.DeepEqual(again, in) {
			t.Fatalf("Parse(%q) = %#v; String %q parses to %#v, %v", line, in, in.String(), again, err)
		}
	})
}
