// SPDX-License-Identifier: GPL-3.0-or-later

package tests

// A command pipelined after IDLE's DONE. go-imap v1 (and foxcpp's fork that
// maddy 0.8.2 builds with) reads DONE with a bufio.Scanner of its own and
// loses what followed it in the same read; the custom build links in the
// fork with the change internal/custombuild/patches.go makes
// (docs/maddy-changes.md). The bare store shows that the fix is in the
// binary, not in the module.

import (
	"fmt"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// pipelineRounds is how many times TestPipelineAfterIdleDone ends an IDLE
// with a command in the same write.
const pipelineRounds = 200

// TestPipelineAfterIdleDone: "DONE\r\nt<N> NOOP\r\n" in one write is
// answered with IDLE's completion and then NOOP's, every time.
func TestPipelineAfterIdleDone(t *testing.T) {
	t.Parallel()
	bareAndNotify(t, func(t *testing.T, srv *testkit.Server, _ string) {
		c := testkit.DialRaw(t, srv.Addr("imap"))
		c.Login(user, pass)
		if _, tagged := c.Cmd("SELECT INBOX"); !strings.HasPrefix(tagged, "OK") {
			t.Fatalf("SELECT INBOX: %s", tagged)
		}
		for n := 1; n <= pipelineRounds; n++ {
			c.Idle()
			tag := fmt.Sprintf("t%d", n)
			idleTag := c.DonePipelined(tag + " NOOP")
			c.Expect(t, expectWait, idleTag+" OK IDLE completed", tag+" OK NOOP completed")
		}
		c.ExpectNothing(t, quietWait)
	})
}

// TestPipelineIdleAndDoneInOneWrite: "IDLE\r\nDONE\r\n" in one write (DONE
// already buffered when IDLE starts) ends the IDLE, and the connection
// stays in step.
func TestPipelineIdleAndDoneInOneWrite(t *testing.T) {
	t.Parallel()
	bareAndNotify(t, func(t *testing.T, srv *testkit.Server, _ string) {
		c := testkit.DialRaw(t, srv.Addr("imap"))
		c.Login(user, pass)
		if _, tagged := c.Cmd("SELECT INBOX"); !strings.HasPrefix(tagged, "OK") {
			t.Fatalf("SELECT INBOX: %s", tagged)
		}
		c.Send("i1 IDLE\r\nDONE\r\ni2 NOOP")
		c.Expect(t, expectWait, "+ idling", "i1 OK IDLE completed", "i2 OK NOOP completed")
		if untagged, tagged := c.Cmd("NOOP"); len(untagged) != 0 || tagged != "OK NOOP completed" {
			t.Errorf("NOOP after the pipelined IDLE: %q, %q", untagged, tagged)
		}
		c.ExpectNothing(t, quietWait)
	})
}
