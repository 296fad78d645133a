// SPDX-License-Identifier: GPL-3.0-or-later

package imapwire_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
)

// TestImports holds the import rule of the package's doc comment: nothing
// of this module (HoldImports) and nothing outside the standard library.
func TestImports(t *testing.T) {
	testkit.HoldImports(t)
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/maddy-notify/maddy-notify/internal/imapwire" {
			t.Errorf("package imapwire depends on %s, outside the standard library", dep)
		}
	}
}
