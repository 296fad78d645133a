// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// modulePath is this module's import path.
const modulePath = "github.com/maddy-notify/maddy-notify"

// HoldImports holds the import rule a package's doc comment states: of
// this module's packages, the package in the current directory (a test's)
// depends, directly or not, on the allowed ones only (paths relative to
// the module root, e.g. "event"). It fails the test naming every other.
func HoldImports(t *testing.T, allowed ...string) {
	t.Helper()
	self, err := exec.Command("go", "list", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	me := strings.TrimSpace(string(self))
	for _, dep := range deps(t) {
		if dep == me || (dep != modulePath && !strings.HasPrefix(dep, modulePath+"/")) {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(dep, modulePath), "/")
		if !slices.Contains(allowed, rel) {
			t.Errorf("%s depends on %s; its doc comment allows only %v of this module", me, dep, allowed)
		}
	}
}

// deps returns what the package in the current directory depends on,
// itself included (go list -deps).
func deps(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	return strings.Fields(string(out))
}
