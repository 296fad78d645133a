// SPDX-License-Identifier: GPL-3.0-or-later

package custombuild

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// allPatches are the patches this package applies, for tests that hold
// each of them to the same rules.
var allPatches = []patch{serverExtensionsDoor, idleDoneBuffered, idleAnswersAfterMailbox}

// writeShaped writes, under root, every file p edits holding each edit's old
// text between filler lines, and returns the contents the patched files
// must have.
func writeShaped(t *testing.T, root string, p patch) (want map[string]string) {
	t.Helper()
	src := make(map[string]string)
	var order []string
	for _, r := range p.requires {
		if _, ok := src[r.file]; !ok {
			order = append(order, r.file)
		}
		src[r.file] += "// required\n" + r.text
	}
	for _, e := range p.edits {
		if _, ok := src[e.file]; !ok {
			order = append(order, e.file)
		}
		src[e.file] += "// before\n" + e.old + "// after\n"
	}
	want = make(map[string]string)
	for _, f := range order {
		want[f] = src[f]
		path := filepath.Join(root, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src[f]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range p.edits {
		want[e.file] = strings.Replace(want[e.file], e.old, e.new, 1)
	}
	return want
}

// readAll returns the contents of the files of want, read under root.
func readAll(t *testing.T, root string, want map[string]string) map[string]string {
	t.Helper()
	got := make(map[string]string)
	for f := range want {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		got[f] = string(b)
	}
	return got
}

func checkFiles(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for f, got := range readAll(t, root, want) {
		if got != want[f] {
			t.Errorf("%s:\n got: %q\nwant: %q", f, got, want[f])
		}
	}
}

// TestCustomPatchShapes: a source of the expected shape is patched; a
// patched one is left alone without an error; one of another shape, or
// patched only in part, is refused with an error naming the file, and no
// file is written.
func TestCustomPatchShapes(t *testing.T) {
	for _, p := range allPatches {
		t.Run(p.name, func(t *testing.T) {
			root := t.TempDir()
			want := writeShaped(t, root, p)
			applied, err := p.apply(root)
			if err != nil || !applied {
				t.Fatalf("apply to the expected shape = %v, %v; want true, nil", applied, err)
			}
			checkFiles(t, root, want)

			applied, err = p.apply(root)
			if err != nil || applied {
				t.Fatalf("apply to a patched source = %v, %v; want false, nil", applied, err)
			}
			checkFiles(t, root, want)

			for i, e := range p.edits {
				// Another shape: the text edit i replaces is changed.
				root := t.TempDir()
				writeShaped(t, root, p)
				path := filepath.Join(root, filepath.FromSlash(e.file))
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				changed := strings.Replace(string(b), e.old, e.old[:1]+"changed upstream"+e.old[1:], 1)
				if err := os.WriteFile(path, []byte(changed), 0o644); err != nil {
					t.Fatal(err)
				}
				before := readAll(t, root, want)
				_, err = p.apply(root)
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "expected shape") ||
					!strings.Contains(err.Error(), e.old) {
					t.Errorf("edit %d: apply to another shape: %v; want an error naming %s and the expected text", i, err, path)
				}
				if after := readAll(t, root, want); !equalMaps(before, after) {
					t.Errorf("edit %d: a refused patch wrote files", i)
				}
			}

			for _, r := range p.requires {
				root := t.TempDir()
				writeShaped(t, root, p)
				path := filepath.Join(root, filepath.FromSlash(r.file))
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(strings.Replace(string(b), r.text, "", 1)), 0o644); err != nil {
					t.Fatal(err)
				}
				_, err = p.apply(root)
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), r.text) {
					t.Errorf("apply without %q: %v; want an error naming %s", r.text, err, path)
				}
			}

			if len(p.edits) > 1 {
				// Partly patched: the first edit present, the others not.
				root := t.TempDir()
				writeShaped(t, root, p)
				e := p.edits[0]
				path := filepath.Join(root, filepath.FromSlash(e.file))
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(strings.Replace(string(b), e.old, e.new, 1)), 0o644); err != nil {
					t.Fatal(err)
				}
				_, err = p.apply(root)
				if err == nil || !strings.Contains(err.Error(), "partly present") || !strings.Contains(err.Error(), path) {
					t.Errorf("apply to a partly patched source: %v; want a \"partly present\" error naming %s", err, path)
				}
			}

			// A missing file is named too.
			_, err = p.apply(t.TempDir())
			if err == nil || !strings.Contains(err.Error(), filepath.FromSlash(p.edits[0].file)) {
				t.Errorf("apply to an empty folder: %v; want an error naming %s", err, p.edits[0].file)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// realSources copies the maddy version this package builds and the go-imap
// source it builds with out of the module cache into a temporary folder,
// applies the patches and returns the two trees.
func realSources(t *testing.T) (maddy, goIMAP string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	scratch := t.TempDir()
	var o Options
	dir, err := downloadDir(ctx, o, scratch, maddyModule+"@"+DefaultMaddyVersion)
	if err != nil {
		t.Fatal(err)
	}
	maddy = filepath.Join(scratch, "maddy")
	if err := copyTree(dir, maddy); err != nil {
		t.Fatal(err)
	}
	src, err := goIMAPSource(ctx, o, maddy)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src, "github.com/foxcpp/go-imap@") {
		t.Errorf("maddy %s builds with %s; want foxcpp's fork", DefaultMaddyVersion, src)
	}
	if dir, err = downloadDir(ctx, o, scratch, src); err != nil {
		t.Fatal(err)
	}
	goIMAP = filepath.Join(scratch, "go-imap")
	if err := copyTree(dir, goIMAP); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    patch
		root string
	}{{serverExtensionsDoor, maddy}, {idleDoneBuffered, goIMAP}, {idleAnswersAfterMailbox, goIMAP}} {
		if applied, err := c.p.apply(c.root); err != nil || !applied {
			t.Fatalf("patch %q on the real source = %v, %v; want true, nil", c.p.name, applied, err)
		}
	}
	return maddy, goIMAP
}

// TestCustomPatchesFitRealSource applies both patches to the real source the
// build uses and checks the result: the endpoint asks the store for server
// extensions (through ServerExtensionsMethod) before it enables COMPRESS,
// IDLE reads DONE without a bufio.Scanner of its own, and both patched
// packages compile with this module's dependencies.
func TestCustomPatchesFitRealSource(t *testing.T) {
	maddy, goIMAP := realSources(t)

	imapGo := filepath.Join(maddy, "internal", "endpoint", "imap", "imap.go")
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, imapGo, nil, 0)
	if err != nil {
		t.Fatalf("patched imap.go does not parse: %v", err)
	}
	body := funcBody(t, f, "enableExtensions")
	door, comp := token.NoPos, token.NoPos
	ast.Inspect(body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			switch {
			case sel.Sel.Name == ServerExtensionsMethod && door == token.NoPos:
				door = sel.Pos()
			case sel.Sel.Name == "NewExtension" && isIdent(sel.X, "compress"):
				comp = sel.Pos()
			}
		}
		return true
	})
	if door == token.NoPos || comp == token.NoPos || door > comp {
		t.Errorf("patched enableExtensions: %s called at %v, compress.NewExtension at %v; want the call first",
			ServerExtensionsMethod, fset.Position(door), fset.Position(comp))
	}

	cmdAuth := filepath.Join(goIMAP, "server", "cmd_auth.go")
	f, err = parser.ParseFile(fset, cmdAuth, nil, 0)
	if err != nil {
		t.Fatalf("patched cmd_auth.go does not parse: %v", err)
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Name == "bufio" {
			t.Errorf("patched cmd_auth.go still uses bufio at %v", fset.Position(id.Pos()))
		}
		return true
	})
	if !strings.Contains(funcSource(t, cmdAuth, "Handle", "Idle"), "conn.readLine()") {
		t.Errorf("patched (*Idle).Handle does not read DONE with conn.readLine()")
	}

	if testing.Short() {
		t.Skip("compiling the patched packages")
	}
	// Compile both patched packages against this module's go.mod and go.sum
	// with two more replace directives, through a temporary -modfile.
	root, err := FindModuleRoot(".", DefaultModule)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	modfile := filepath.Join(tmp, "go.mod")
	for _, name := range []string{"go.mod", "go.sum"} {
		if err := copyFile(filepath.Join(root, name), filepath.Join(tmp, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	goCmd("mod", "edit", "-modfile="+modfile, "-replace="+maddyModule+"="+maddy, "-replace="+goIMAPModule+"="+goIMAP)
	goCmd("build", "-modfile="+modfile, "-mod=mod", "-o", os.DevNull,
		maddyModule+"/internal/endpoint/imap", goIMAPModule+"/server")
}

// funcBody returns the body of the function (not method receiver-checked)
// named name in f.
func funcBody(t *testing.T, f *ast.File, name string) *ast.BlockStmt {
	t.Helper()
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			return fd.Body
		}
	}
	t.Fatalf("no func %s", name)
	return nil
}

// funcSource returns the source text of the method name of type recv
// (pointer receiver) in the file path.
func funcSource(t *testing.T, path, name, recv string) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != name || fd.Recv == nil || len(fd.Recv.List) != 1 {
			continue
		}
		if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok && isIdent(star.X, recv) {
			return string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset])
		}
	}
	t.Fatalf("%s: no method (*%s).%s", path, recv, name)
	return ""
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// TestCustomPatchesDocumented: docs/maddy-changes.md shows every line each
// patch adds as a "+" line of its diff, so the write-up cannot drift from
// the patch text.
func TestCustomPatchesDocumented(t *testing.T) {
	root, err := FindModuleRoot(".", DefaultModule)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "maddy-changes.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := make(map[string]bool)
	for _, l := range strings.Split(string(doc), "\n") {
		lines[l] = true
	}
	for _, p := range allPatches {
		for _, e := range p.edits {
			old := make(map[string]bool)
			for _, l := range strings.Split(e.old, "\n") {
				old[l] = true
			}
			for _, l := range strings.Split(strings.TrimSuffix(e.new, "\n"), "\n") {
				if !old[l] && !lines["+"+l] {
					t.Errorf("docs/maddy-changes.md lacks the added line %q of patch %q (%s)", "+"+l, p.name, e.file)
				}
			}
		}
	}
}
