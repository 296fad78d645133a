// SPDX-License-Identifier: GPL-3.0-or-later

package maddyproc

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestExpandPorts(t *testing.T) {
	got, err := ExpandPorts("imap tcp://127.0.0.1:{port:imap} { }\nsmtp {port:smtp}", map[string]int{"imap": 1143, "smtp": 2525})
	if err != nil {
		t.Fatal(err)
	}
	if want := "imap tcp://127.0.0.1:1143 { }\nsmtp 2525"; got != want {
		t.Errorf("ExpandPorts = %q, want %q", got, want)
	}
	if _, err := ExpandPorts("x {port:imap} {port:pop3}", map[string]int{"imap": 1}); err == nil || !strings.Contains(err.Error(), "{port:pop3}") {
		t.Errorf("ExpandPorts with an unknown port: %v, want an error naming {port:pop3}", err)
	}
}

func TestFreePortNotRepeated(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("FreePort returned %d twice", p)
		}
		seen[p] = true
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("MADDY_CONFIG", "/etc/maddy/maddy.conf")
	env := Env("A=1")
	for _, kv := range env {
		if strings.HasPrefix(kv, "MADDY_") {
			t.Errorf("Env kept %q", kv)
		}
	}
	if len(env) == 0 || env[len(env)-1] != "A=1" {
		t.Errorf("Env does not end with the extra variable A=1: %q", env)
	}
}

func TestWaitPorts(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	up := l.Addr().(*net.TCPAddr).Port
	if err := WaitPorts(map[string]int{"imap": up}, nil, time.Second); err != nil {
		t.Errorf("a listening port: %v", err)
	}
	down, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitPorts(map[string]int{"smtp": down}, exited, time.Minute); !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "port smtp") {
		t.Errorf("an exited process: %v, want ErrExited naming port smtp", err)
	}
	if err := WaitPorts(map[string]int{"smtp": down}, nil, 100*time.Millisecond); err == nil || errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "not up after") {
		t.Errorf("a port that never comes up: %v", err)
	}
}
