// SPDX-License-Identifier: GPL-3.0-or-later

package event

import (
	"encoding/json"
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

func TestKindString(t *testing.T) {
	want := []string{"MessageNew", "MessageAppend", "MessageExpunge", "FlagChange",
		"MailboxCreate", "MailboxDelete", "MailboxRename", "SubscriptionChange"}
	var got []string
	for _, k := range Kinds() {
		got = append(got, k.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Kinds() names = %v, want %v", got, want)
	}
	if s := Kind(0).String(); s != "Kind(0)" {
		t.Errorf("Kind(0).String() = %q", s)
	}
	if s := Kind(200).String(); s != "Kind(200)" {
		t.Errorf("Kind(200).String() = %q", s)
	}
}

func TestParseKind(t *testing.T) {
	for _, k := range Kinds() {
		for _, s := range []string{k.String(), strings.ToLower(k.String()), strings.ToUpper(k.String())} {
			got, err := ParseKind(s)
			if err != nil || got != k {
				t.Errorf("ParseKind(%q) = %v, %v; want %v", s, got, err, k)
			}
		}
	}
	for _, s := range []string{"", "FlagsSet", "MailboxSubscribe", "MessageNew ", "Kind(1)"} {
		if k, err := ParseKind(s); err == nil {
			t.Errorf("ParseKind(%q) = %v, want error", s, k)
		}
	}
}

func TestKindText(t *testing.T) {
	e := Event{Kind: MailboxRename, Account: "u", Mailbox: "n", OldMailbox: "o", Attrs: []string{`\Marked`}}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"Kind":"MailboxRename"`) {
		t.Errorf("JSON %s does not carry the kind by name", b)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, e) {
		t.Errorf("JSON round trip: %+v, %v; want %+v", back, err, e)
	}
	if _, err := json.Marshal(Event{}); err == nil {
		t.Error("marshalled an event with kind 0")
	}
	if err := json.Unmarshal([]byte(`{"Kind":"Nope"}`), &back); err == nil {
		t.Error("unmarshalled an unknown kind")
	}
}

func TestKindClasses(t *testing.T) {
	for _, k := range Kinds() {
		if k.IsMessage() == k.IsMailbox() {
			t.Errorf("%v: IsMessage=%v IsMailbox=%v, want exactly one", k, k.IsMessage(), k.IsMailbox())
		}
	}
	if Kind(0).IsMessage() || Kind(0).IsMailbox() || Kind(0).Valid() {
		t.Error("Kind(0) classified as valid")
	}
}

func TestValidate(t *testing.T) {
	ok := Event{Kind: MessageNew, Account: "u", Mailbox: "INBOX", Delimiter: "/"}
	tests := []struct {
		name    string
		mod     func(*Event)
		wantErr string // "" = valid
	}{
		{"valid", func(*Event) {}, ""},
		{"no delimiter", func(e *Event) { e.Delimiter = "" }, ""},
		{"non-ASCII mailbox", func(e *Event) { e.Mailbox = "Entwürfe" }, ""},
		{"rename", func(e *Event) { e.Kind = MailboxRename; e.OldMailbox = "a" }, ""},
		{"zero kind", func(e *Event) { e.Kind = 0 }, "invalid kind"},
		{"unknown kind", func(e *Event) { e.Kind = maxKind + 1 }, "invalid kind"},
		{"no account", func(e *Event) { e.Account = "" }, "without account"},
		{"no mailbox", func(e *Event) { e.Mailbox = "" }, "empty name"},
		{"invalid UTF-8", func(e *Event) { e.Mailbox = "a\xffb" }, "not valid UTF-8"},
		{"CR in name", func(e *Event) { e.Mailbox = "a\rb" }, "NUL, CR or LF"},
		{"NUL in name", func(e *Event) { e.Mailbox = "a\x00b" }, "NUL, CR or LF"},
		{"rename without old", func(e *Event) { e.Kind = MailboxRename }, "old mailbox: empty name"},
		{"old name on create", func(e *Event) { e.Kind = MailboxCreate; e.OldMailbox = "x" }, "only MailboxRename"},
		{"long delimiter", func(e *Event) { e.Delimiter = "//" }, "delimiter"},
		{"8-bit delimiter", func(e *Event) { e.Delimiter = "\xc3" }, "delimiter"},
		{"empty attr", func(e *Event) { e.Attrs = []string{""} }, "empty mailbox attribute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok.Clone()
			tt.mod(&e)
			err := e.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// CheckMailboxName accepts exactly the names Validate accepts as an
// event's mailbox, with the package's prefix on its errors.
func TestCheckMailboxName(t *testing.T) {
	for _, name := range []string{"INBOX", "a", "Entwürfe", `"\`, " ", "&", "😀", "a\tb",
		"", "a\rb", "a\nb", "a\x00b", "\xff", "a\xc3"} {
		err := CheckMailboxName(name)
		verr := Event{Kind: MessageNew, Account: "u", Mailbox: name}.Validate()
		if (err == nil) != (verr == nil) {
			t.Errorf("CheckMailboxName(%q) = %v, but Validate of an event with that mailbox = %v", name, err, verr)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "event: ") {
			t.Errorf("CheckMailboxName(%q) error %q lacks the package prefix", name, err)
		}
	}
	if err := CheckMailboxName(""); !errors.Is(err, errEmptyName) {
		t.Errorf("CheckMailboxName(\"\") = %v, want it to wrap errEmptyName", err)
	}
}

func TestClone(t *testing.T) {
	e := Event{Kind: MailboxCreate, Account: "u", Mailbox: "Box", Attrs: []string{`\Marked`, `\HasNoChildren`}}
	c := e.Clone()
	if !reflect.DeepEqual(c, e) {
		t.Fatalf("Clone() = %+v, want %+v", c, e)
	}
	c.Attrs[0] = "y"
	if e.Attrs[0] != `\Marked` {
		t.Fatal("Clone shares slices with the original")
	}
	if (Event{}).Clone().Attrs != nil {
		t.Fatal("Clone of nil slice is not nil")
	}
	// Clone copies Attrs: a field of another reference type would be shared.
	typ := reflect.TypeOf(Event{})
	for i := 0; i < typ.NumField(); i++ {
		switch f := typ.Field(i); f.Type.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			if f.Name != "Attrs" {
				t.Errorf("Event.%s is a %v that Clone does not copy", f.Name, f.Type.Kind())
			}
		}
	}
}

func TestString(t *testing.T) {
	e := Event{Kind: MailboxRename, Account: "u", Mailbox: "new", OldMailbox: "old", Origin: 7}
	if got, want := e.String(), `MailboxRename account="u" mailbox="new" old="old" origin=7`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

// TestImports holds the package's promise: it imports nothing of this module.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/maddy-notify/maddy-notify") && dep != "github.com/maddy-notify/maddy-notify/event" {
			t.Errorf("package event depends on %s", dep)
		}
		if first, _, _ := strings.Cut(dep, "/"); strings.Contains(first, ".") && !strings.HasPrefix(dep, "github.com/maddy-notify/") {
			t.Errorf("package event depends on non-standard package %s", dep)
		}
	}
}
