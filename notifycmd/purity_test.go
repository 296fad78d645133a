// SPDX-License-Identifier: GPL-3.0-or-later

package notifycmd

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

// TestPurity holds the package's promise: no I/O, no locks, no goroutines;
// only the standard library, mapping, event and go-imap v1 imported.
func TestPurity(t *testing.T) {
	allowed := map[string]bool{
		"github.com/maddy-notify/maddy-notify/mapping": true,
		"github.com/emersion/go-imap":                  true,
		"github.com/emersion/go-imap/utf7":             true,
	}
	forbidden := map[string]string{
		"sync": "locks", "sync/atomic": "locks", "net": "I/O", "os": "I/O", "io/ioutil": "I/O",
		"log": "I/O", "time": "clock", "unsafe": "purity",
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
				t.Errorf("%s imports %s: only the standard library, mapping and go-imap v1 are allowed", name, path)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: go statement at %v", name, fset.Position(n.Pos()))
			case *ast.ChanType:
				t.Errorf("%s: channel type at %v", name, fset.Position(n.Pos()))
			}
			return true
		})
	}

	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/maddy-notify/maddy-notify") &&
			dep != "github.com/maddy-notify/maddy-notify/event" && dep != "github.com/maddy-notify/maddy-notify/mapping" &&
			dep != "github.com/maddy-notify/maddy-notify/notifycmd",
			strings.HasPrefix(dep, "github.com/emersion/go-imap/v2"),
			strings.HasPrefix(dep, "github.com/foxcpp/maddy"):
			t.Errorf("package notifycmd depends on %s", dep)
		}
	}
}
