// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Purity is what a pure package (no I/O, no locks, no goroutines) may
// import, for HoldPurity.
type Purity struct {
	// Imports are the packages outside the standard library the package's
	// files may import (e.g. "github.com/emersion/go-imap").
	Imports []string
	// Module are this module's packages it may depend on, directly or
	// not, relative to the module root (HoldImports).
	Module []string
	// Clock forbids time.Now, time.Since and time.Sleep as well.
	Clock bool
	// Forbid are more standard library packages the package must not
	// import (e.g. "time" for one that needs no time at all).
	Forbid []string
}

// purityForbidden are the standard library packages a pure package must
// not import, with the reason.
var purityForbidden = map[string]string{
	"sync": "locks", "sync/atomic": "locks", "net": "I/O", "os": "I/O", "io/ioutil": "I/O",
	"log": "I/O", "math/rand": "non-determinism", "math/rand/v2": "non-determinism", "unsafe": "purity",
}

// HoldPurity holds the promise of a pure package, the one in the current
// directory (a test's): its non-test files import no I/O, locking or
// random package and nothing outside the standard library but p.Imports,
// start no goroutine and use no channel (nor, with p.Clock, the clock); of
// this module it depends on p.Module only, and on neither go-imap v2 nor
// maddy.
func HoldPurity(t *testing.T, p Purity) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, imp := range p.Imports {
		allowed[imp] = true
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
			if why, bad := purityForbidden[path]; bad {
				t.Errorf("%s imports %s (%s)", name, path, why)
			}
			for _, f := range p.Forbid {
				if path == f {
					t.Errorf("%s imports %s (forbidden for this package)", name, path)
				}
			}
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") && !allowed[path] &&
				!strings.HasPrefix(path, modulePath+"/") {
				t.Errorf("%s imports %s: outside the standard library only %v are allowed", name, path, p.Imports)
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
				if id, ok := n.X.(*ast.Ident); p.Clock && ok && id.Name == "time" &&
					(n.Sel.Name == "Now" || n.Sel.Name == "Since" || n.Sel.Name == "Sleep") {
					t.Errorf("%s: time.%s at %v", name, n.Sel.Name, fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
	HoldImports(t, p.Module...)
	for _, dep := range deps(t) {
		if strings.HasPrefix(dep, "github.com/emersion/go-imap/v2") || strings.HasPrefix(dep, "github.com/foxcpp/maddy") {
			t.Errorf("the package depends on %s", dep)
		}
	}
}
