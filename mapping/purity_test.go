// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// TestPurity holds the package's promise: no I/O, no locks, no goroutines,
// no clock; only the standard library, event and go-imap v1 imported.
func TestPurity(t *testing.T) {
	testkit.HoldPurity(t, testkit.Purity{
		Imports: []string{"github.com/emersion/go-imap", "github.com/emersion/go-imap/utf7"},
		Module:  []string{"event"},
		Clock:   true,
	})
}
