// SPDX-License-Identifier: GPL-3.0-or-later

package custombuild

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBuildFromCheckout builds maddy with this checkout linked in and checks
// that the result is the full maddy CLI reporting the custom version.
func TestBuildFromCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds maddy (a minute or two on a cold build cache)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := FindModuleRoot(wd, DefaultModule)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "bin", "maddy")
	var progress, goOutput bytes.Buffer
	err = Build(ctx, Options{ModuleDir: root, Output: out, Stdout: &progress, Stderr: &goOutput})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("Build: %v\ngo output:\n%s", err, goOutput.String())
	}

	version := runBinary(t, ctx, out, "version")
	if !strings.Contains(version, DefaultMaddyVersion+VersionSuffix) {
		t.Errorf("`maddy version` does not mention %s:\n%s", DefaultMaddyVersion+VersionSuffix, version)
	}

	// maddy v0.8.2 sets no app version, so `help` does not print one: the
	// version is checked above, the command list here.
	help := runBinary(t, ctx, out, "help")
	for _, cmd := range []string{"run", "creds", "imap-acct", "imap-mboxes", "imap-msgs", "hash"} {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(cmd) + `\s`).MatchString(help) {
			t.Errorf("`maddy help` lists no %q command:\n%s", cmd, help)
		}
	}

	info, err := buildinfo.ReadFile(out)
	if err != nil {
		t.Fatalf("read build info: %v", err)
	}
	deps := make(map[string]string)
	for _, d := range info.Deps {
		deps[d.Path] = d.Version
		if d.Path == DefaultModule && (d.Replace == nil || d.Replace.Path != root) {
			t.Errorf("%s is linked in without a replace pointing at %s: %+v", DefaultModule, root, d)
		}
		// The patched copy of the go-imap fork (patches.go): a folder, so
		// no version.
		if d.Path == goIMAPModule && (d.Replace == nil || d.Replace.Version != "(devel)" || !filepath.IsAbs(d.Replace.Path)) {
			t.Errorf("%s is linked in without a replace pointing at a patched copy: %+v", goIMAPModule, d.Replace)
		}
	}
	if _, ok := deps[DefaultModule]; !ok {
		t.Errorf("%s is not linked into the binary", DefaultModule)
	}
	if info.Path != "github.com/foxcpp/maddy/cmd/maddy" {
		t.Errorf("main package is %s, want github.com/foxcpp/maddy/cmd/maddy", info.Path)
	}
	for _, s := range info.Settings {
		if s.Key == "CGO_ENABLED" && s.Value == "1" {
			if _, ok := deps["github.com/mattn/go-sqlite3"]; !ok {
				t.Errorf("cgo is enabled but the cgo SQLite driver is not linked in")
			}
		}
	}
}

// runBinary runs bin with args and returns its combined output, failing the
// test if it exits non-zero.
func runBinary(t *testing.T, ctx context.Context, bin string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, b)
	}
	return string(b)
}

func TestOptionsValidation(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"both sources", Options{ModuleDir: dir, ModuleVersion: "v1.0.0", Output: "x"}, "exclusive"},
		{"no source", Options{Output: "x"}, "required"},
		{"no output", Options{ModuleDir: dir}, "Output is required"},
		{"no go.mod", Options{ModuleDir: t.TempDir(), Output: "x"}, "go.mod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Build(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build(%+v) = %v, want an error mentioning %q", tc.o, err, tc.want)
			}
		})
	}

	o, err := Options{ModuleDir: dir, Output: "bin/maddy"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.MaddyVersion != DefaultMaddyVersion || o.Module != DefaultModule || !filepath.IsAbs(o.Output) {
		t.Errorf("withDefaults = %+v", o)
	}
}

func TestFindModuleRoot(t *testing.T) {
	root := t.TempDir()
	inner := filepath.Join(root, "inner")
	deep := filepath.Join(inner, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "go.mod"), "// comment\nmodule \"example.com/outer\" // trailing\n\ngo 1.23\n")
	write(filepath.Join(inner, "go.mod"), "module example.com/inner\n")

	if got, err := FindModuleRoot(deep, "example.com/inner"); err != nil || got != inner {
		t.Errorf("inner: got %q, %v; want %q", got, err, inner)
	}
	if got, err := FindModuleRoot(deep, "example.com/outer"); err != nil || got != root {
		t.Errorf("outer: got %q, %v; want %q", got, err, root)
	}
	if _, err := FindModuleRoot(deep, "example.com/none"); err == nil {
		t.Error("unknown module: no error")
	}
}

func TestCopyTreeMakesWritableCopies(t *testing.T) {
	src := t.TempDir()
	sub := filepath.Join(src, "cmd", "x")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "main.go"), []byte("package main\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "build.sh"), []byte("#!/bin/sh\n"), 0o555); err != nil {
		t.Fatal(err)
	}
	// Read-only folders, as in the module cache.
	for _, d := range []string{sub, filepath.Dir(sub)} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(d, 0o755) })
	}

	dst := filepath.Join(t.TempDir(), "copy")
	if err := copyTree(src, dst); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		filepath.Join(dst, "cmd", "x", "main.go"): 0o644,
		filepath.Join(dst, "build.sh"):            0o755,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	// A new file must be creatable in the copied folder (the plugin file).
	if err := writePlugin(filepath.Join(dst, "cmd", "x", pluginFile), "example.com/m"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dst, "cmd", "x", pluginFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "DO NOT EDIT") || !strings.Contains(string(b), `import _ "example.com/m"`) {
		t.Errorf("plugin file:\n%s", b)
	}
}

func TestMergeGoSum(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst.sum")
	src := filepath.Join(dir, "src.sum")
	if err := os.WriteFile(dst, []byte("a v1 h1:x\nb v1 h1:y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, []byte("b v1 h1:y\nc v1 h1:z\n\nc v1 h1:z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mergeGoSum(dst, src); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a v1 h1:x\nb v1 h1:y\nc v1 h1:z\n"; string(b) != want {
		t.Errorf("merged go.sum = %q, want %q", b, want)
	}
	if err := mergeGoSum(dst, filepath.Join(dir, "missing.sum")); err != nil {
		t.Errorf("missing source: %v", err)
	}
}
