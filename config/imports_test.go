// SPDX-License-Identifier: GPL-3.0-or-later

package config_test

import (
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// TestImports holds the import rule of the package's doc comment.
func TestImports(t *testing.T) { testkit.HoldImports(t, "event", "mapping") }
