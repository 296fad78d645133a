// SPDX-License-Identifier: GPL-3.0-or-later

package mapping

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPurity holds the package's promise: no I/O, no locks, no goroutines,
// no clock; only the standard library, event and go-imap v1 imported.
func TestPurity(t *testing.T) {
	allowed := map[string]bool{
		"github.com/maddy-notify/maddy-notify/event": true,
		"github.com/emersion/go-imap":                true,
		"github.com/emersion/go-imap/utf7":           true,
	}
	forbidden := map[string]string{
		"sync": "locks", "sync/atomic": "locks", "net": "I/O", "os": "I/O", "io/ioutil": "I/O",
		"log": "I/O", "math/rand": "non-determinism", "math/rand/v2": "non-determinism", "unsafe": "purity",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if why, bad := forbidden[path]; bad {
				t.Errorf("%s imports %s (%s)", name, path, why)
			}
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") && !allowed[path] {
				t.Errorf("%s imports %s: only the standard library, event and go-imap v1 are allowed", name, path)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement at %v", name, fset.Position(n.Pos()))
			case *ast.SendStmt:
				t.Errorf("%s: channel send at %v", name, fset.Position(n.Pos()))
			case *ast.ChanType:
				t.Errorf("%s: channel type at %v", name, fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				if id, ok := n.X.(*ast.Ident); ok && id.Name == "time" && (n.Sel.Name == "Now" || n.Sel.Name == "Since" || n.Sel.Name == "Sleep") {
					t.Errorf("%s: time.%s at %v", name, n.Sel.Name, fset.Position(n.Pos()))
				}
			}
			return true
		})
	}

	// Transitively: nothing else of this module, no go-imap v2, no maddy.
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/maddy-notify/maddy-notify") &&
			dep != "github.com/maddy-notify/maddy-notify/event" && dep != "github.com/maddy-notify/maddy-notify/mapping",
			strings.HasPrefix(dep, "github.com/emersion/go-imap/v2"),
			strings.HasPrefix(dep, "github.com/foxcpp/maddy"):
			t.Errorf("package mapping depends on %s", dep)
		}
	}
}
