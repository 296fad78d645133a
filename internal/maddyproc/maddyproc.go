// SPDX-License-Identifier: GPL-3.0-or-later

// Package maddyproc holds what the tests (internal/testkit) and the
// benchmark harness (cmd/notify-bench) share to run a maddy process on
// loopback: free ports, the {port:NAME} references of a configuration,
// maddy's environment, and waiting until its listeners are up. It starts no
// goroutines.
package maddyproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	portsMu sync.Mutex
	handed  = map[int]bool{} // every port FreePort returned in this process
)

// FreePort returns a 127.0.0.1 TCP port that was free a moment ago and that
// this process has not handed out before. Another process may still take it
// before maddy binds it; maddy then fails to start and says so in its log.
// It may be called from any goroutine.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("allocate port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handed[port] {
			handed[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no unused port after 100 tries")
}

// portRef is a port reference in a configuration: {port:NAME}.
var portRef = regexp.MustCompile(`\{port:([^}]*)\}`)

// ExpandPorts replaces every {port:NAME} in config by ports[NAME]. A NAME
// that ports does not have is an error naming the reference.
func ExpandPorts(config string, ports map[string]int) (string, error) {
	var missing string
	out := portRef.ReplaceAllStringFunc(config, func(ref string) string {
		port, ok := ports[portRef.FindStringSubmatch(ref)[1]]
		if !ok {
			if missing == "" {
				missing = ref
			}
			return ref
		}
		return strconv.Itoa(port)
	})
	if missing != "" {
		return "", fmt.Errorf("config uses %s but no such port was allocated", missing)
	}
	return out, nil
}

// Env returns this process's environment without MADDY_* variables (a
// developer's settings must not leak into the maddy under test), followed
// by extra.
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MADDY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// ErrExited is wrapped by WaitPorts's error when the process ended first.
var ErrExited = errors.New("maddy exited")

// WaitPorts waits until every port of ports accepts a TCP connection on
// 127.0.0.1 (each probe shows in maddy's log as a connection closed by the
// peer). It returns an error naming the port when exited is closed first
// (wrapping ErrExited) or when a port is not up within timeout.
func WaitPorts(ports map[string]int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for name, port := range ports {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				return fmt.Errorf("%w before port %s (%s) was up", ErrExited, name, addr)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("port %s (%s) not up after %v: %w", name, addr, timeout, err)
			}
		}
	}
	return nil
}
