// SPDX-License-Identifier: GPL-3.0-or-later

package notifycmd

import (
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// TestPurity holds the package's promise: no I/O, no locks, no goroutines,
// no time; only the standard library, mapping (and its event) and go-imap v1.
func TestPurity(t *testing.T) {
	testkit.HoldPurity(t, testkit.Purity{
		Imports: []string{"github.com/emersion/go-imap", "github.com/emersion/go-imap/utf7"},
		Module:  []string{"event", "mapping"},
		Clock:   true,
		Forbid:  []string{"time"},
	})
}
