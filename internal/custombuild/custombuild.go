// SPDX-License-Identifier: GPL-3.0-or-later

// Package custombuild builds the full maddy command-line program with one
// extra module linked in, the way xcaddy builds Caddy.
//
// maddy's cmd/maddy imports packages under github.com/foxcpp/maddy/internal,
// which no other module may import, so its main package cannot be reused by
// import. Instead Build copies the maddy source of the requested version out
// of the Go module cache into a temporary folder, adds one file with a blank
// import of the extra module to its cmd/maddy, points a require (and, for a
// local checkout, a replace) at that module and runs go build there. The
// result is the stock maddy CLI (run, creds, imap-acct, imap-mboxes,
// imap-msgs, hash, ...) whose module registry also holds whatever the extra
// module registers in its init functions (for this project: storage.notify).
//
// On the way Build makes two named changes to the copied third-party source,
// all kept in patches.go and written up for upstream in
// docs/maddy-changes.md: maddy's IMAP endpoint enables go-imap server
// extensions a storage offers (ServerExtensionsMethod), and the go-imap v1
// fork maddy builds with, copied next to maddy and linked in by a replace
// directive, answers a command pipelined after IDLE's DONE. A source that
// does not have the expected shape fails the build.
//
// The package owns the temporary build folder and the go commands it starts;
// it does not import maddy or the module it links in, and it never changes the
// go.mod of the module it links in.
package custombuild

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const (
	// DefaultMaddyVersion is the maddy version built when Options.MaddyVersion
	// is empty. It is the version this project's go.mod pins.
	DefaultMaddyVersion = "v0.8.2"

	// DefaultModule is the module linked in when Options.Module is empty.
	DefaultModule = "github.com/maddy-notify/maddy-notify"

	// maddyModule is the module path of the maddy mail server.
	maddyModule = "github.com/foxcpp/maddy"

	// pluginFile is the file written into maddy's cmd/maddy.
	pluginFile = "notify_plugin.go"

	// pseudoVersion is the version required for a module that a replace
	// directive points at a directory; the version itself is never used.
	pseudoVersion = "v0.0.0-00010101000000-000000000000"
)

// VersionSuffix is appended to Options.MaddyVersion to form the version
// string the built binary reports in `maddy version`
// (e.g. "v0.8.2+notify").
const VersionSuffix = "+notify"

// Options says what Build builds. The zero value is not usable: exactly one
// of ModuleDir and ModuleVersion must be set, and Output must be set.
type Options struct {
	// MaddyVersion is the maddy module version to build; default
	// DefaultMaddyVersion. It must be a version the Go module proxy (or the
	// module cache) can serve.
	MaddyVersion string

	// Module is the module path to link in; default DefaultModule. Its root
	// package is blank-imported into maddy's main package.
	Module string

	// ModuleDir is a local checkout of Module, used through a replace
	// directive. Relative paths are taken from the current working
	// directory. Exclusive with ModuleVersion.
	ModuleDir string

	// ModuleVersion is a tagged version of Module fetched through the Go
	// module proxy instead of a local checkout. Exclusive with ModuleDir.
	ModuleVersion string

	// Output is the path of the binary to write. Relative paths are taken
	// from the current working directory; missing parent folders are
	// created.
	Output string

	// Tags are extra build tags passed to go build.
	Tags []string

	// ExtraFiles are more files to write into maddy's cmd/maddy before the
	// build (name → Go source), e.g. the benchmark's profiling hook.
	ExtraFiles map[string]string

	// Stock builds stock maddy instead: no module linked in, none of the
	// changes of patches.go, maddy's own version string. The benchmark
	// builds its baseline with it, so that both binaries come from one
	// build function.
	Stock bool

	// Stdout receives one line per build step; nil discards it.
	Stdout io.Writer

	// Stderr receives the output of the go commands as they run; nil
	// discards it. Whatever is discarded here still ends up in the error
	// returned by a failing step.
	Stderr io.Writer
}

// Build builds the maddy CLI described by o and writes it to o.Output.
//
// Build may be called from any goroutine, also concurrently (each call uses
// its own temporary folder; the Go build cache is safe for concurrent use).
// It runs the go command found in PATH with the caller's environment (GOFLAGS,
// GOPROXY, CGO_ENABLED, ... are respected) plus GOWORK=off. When cgo is
// enabled, maddy's imapsql storage uses the cgo SQLite driver
// (mattn/go-sqlite3), otherwise modernc.org/sqlite.
//
// Cancelling ctx kills the running go command. The temporary folder is
// removed before Build returns, whether it succeeds or not. An error names
// the step that failed, wraps its cause and carries the go command's
// standard error.
func Build(ctx context.Context, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	out := o.Stdout
	if out == nil {
		out = io.Discard
	}

	fmt.Fprintf(out, "custombuild: locating %s@%s in the module cache\n", maddyModule, o.MaddyVersion)
	scratch, err := os.MkdirTemp("", "maddy-custombuild-*")
	if err != nil {
		return fmt.Errorf("custombuild: create temporary folder: %w", err)
	}
	defer os.RemoveAll(scratch)

	// go mod download runs in an empty folder so that it never touches the
	// go.mod/go.sum of whatever module the caller happens to be in.
	srcDir, err := downloadDir(ctx, o, scratch, maddyModule+"@"+o.MaddyVersion)
	if err != nil {
		return err
	}

	tree := filepath.Join(scratch, "maddy")
	fmt.Fprintf(out, "custombuild: copying %s to %s\n", srcDir, tree)
	if err := copyTree(srcDir, tree); err != nil {
		return fmt.Errorf("custombuild: copy maddy source: %w", err)
	}

	for name, src := range o.ExtraFiles {
		if err := os.WriteFile(filepath.Join(tree, "cmd", "maddy", name), []byte(src), 0o644); err != nil {
			return fmt.Errorf("custombuild: write %s: %w", name, err)
		}
	}
	if o.Stock {
		return buildTree(ctx, o, tree, o.MaddyVersion, out)
	}

	if err := writePlugin(filepath.Join(tree, "cmd", "maddy", pluginFile), o.Module); err != nil {
		return err
	}

	// The changes to third-party source, all in patches.go.
	if err := applyPatches(ctx, o, scratch, tree, out); err != nil {
		return err
	}

	editArgs := []string{"mod", "edit"}
	if o.ModuleDir != "" {
		fmt.Fprintf(out, "custombuild: linking in %s from %s\n", o.Module, o.ModuleDir)
		editArgs = append(editArgs,
			"-require="+o.Module+"@"+pseudoVersion,
			"-replace="+o.Module+"="+o.ModuleDir)
	} else {
		fmt.Fprintf(out, "custombuild: linking in %s@%s\n", o.Module, o.ModuleVersion)
		editArgs = append(editArgs, "-require="+o.Module+"@"+o.ModuleVersion)
	}
	if err := runGo(ctx, o, tree, "go mod edit", editArgs...); err != nil {
		return err
	}

	if o.ModuleDir != "" {
		// The checkout's go.sum already holds verified checksums of
		// everything it needs; reusing them spares a checksum database
		// round trip for modules maddy itself does not use.
		if err := mergeGoSum(filepath.Join(tree, "go.sum"), filepath.Join(o.ModuleDir, "go.sum")); err != nil {
			return fmt.Errorf("custombuild: merge go.sum of %s: %w", o.ModuleDir, err)
		}
	}

	return buildTree(ctx, o, tree, o.MaddyVersion+VersionSuffix, out)
}

// buildTree runs go build of cmd/maddy in the prepared tree.
func buildTree(ctx context.Context, o Options, tree, version string, out io.Writer) error {
	buildArgs := []string{"build", "-mod=mod", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X " + maddyModule + ".Version=" + version}
	if len(o.Tags) > 0 {
		buildArgs = append(buildArgs, "-tags", strings.Join(o.Tags, ","))
	}
	buildArgs = append(buildArgs, "-o", o.Output, "./cmd/maddy")
	if err := os.MkdirAll(filepath.Dir(o.Output), 0o755); err != nil {
		return fmt.Errorf("custombuild: create output folder: %w", err)
	}
	fmt.Fprintf(out, "custombuild: go %s\n", strings.Join(buildArgs, " "))
	if err := runGo(ctx, o, tree, "go build", buildArgs...); err != nil {
		return err
	}
	fmt.Fprintf(out, "custombuild: wrote %s (version %s)\n", o.Output, version)
	return nil
}

// withDefaults returns a copy of o with defaults filled in and paths made
// absolute, or an error if o is contradictory.
func (o Options) withDefaults() (Options, error) {
	if o.MaddyVersion == "" {
		o.MaddyVersion = DefaultMaddyVersion
	}
	if o.Module == "" {
		o.Module = DefaultModule
	}
	switch {
	case o.ModuleDir != "" && o.ModuleVersion != "":
		return o, errors.New("custombuild: ModuleDir and ModuleVersion are exclusive")
	case o.Stock && (o.ModuleDir != "" || o.ModuleVersion != ""):
		return o, errors.New("custombuild: Stock builds no module: ModuleDir and ModuleVersion must be empty")
	case o.ModuleDir == "" && o.ModuleVersion == "" && !o.Stock:
		return o, errors.New("custombuild: one of ModuleDir and ModuleVersion is required")
	}
	if o.Output == "" {
		return o, errors.New("custombuild: Output is required")
	}
	var err error
	if o.Output, err = filepath.Abs(o.Output); err != nil {
		return o, fmt.Errorf("custombuild: output path: %w", err)
	}
	if o.ModuleDir != "" {
		if o.ModuleDir, err = filepath.Abs(o.ModuleDir); err != nil {
			return o, fmt.Errorf("custombuild: module folder: %w", err)
		}
		if _, err := os.Stat(filepath.Join(o.ModuleDir, "go.mod")); err != nil {
			return o, fmt.Errorf("custombuild: module folder %s: %w", o.ModuleDir, err)
		}
	}
	return o, nil
}

// downloadDir runs `go mod download -json modVersion` in dir and returns the
// folder of the extracted module in the module cache.
func downloadDir(ctx context.Context, o Options, dir, modVersion string) (string, error) {
	var stdout bytes.Buffer
	if err := runGoOut(ctx, o, dir, &stdout, "go mod download", "mod", "download", "-json", modVersion); err != nil {
		return "", err
	}
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return "", fmt.Errorf("custombuild: go mod download %s: decode output: %w", modVersion, err)
	}
	if info.Error != "" {
		return "", fmt.Errorf("custombuild: go mod download %s: %s", modVersion, info.Error)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("custombuild: go mod download %s: no source folder reported", modVersion)
	}
	return info.Dir, nil
}

// copyTree copies the regular files under src to dst, creating dst. Files in
// the module cache are read-only; the copies are writable by the owner, and
// executable bits are kept.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return copyFile(path, target, info.Mode().Perm()|0o600)
		default:
			// Module zips hold only regular files; anything else is not
			// part of the module.
			return nil
		}
	})
}

// copyFile copies the file src to a new file dst with permissions perm.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writePlugin writes the Go file that links module into maddy's main package.
func writePlugin(path, module string) error {
	src := fmt.Sprintf(`// Code generated by maddy-notify internal/custombuild; DO NOT EDIT.

package main

import _ %q
`, module)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		return fmt.Errorf("custombuild: write %s: %w", path, err)
	}
	return nil
}

// mergeGoSum appends to the go.sum file dst the lines of src it lacks.
// A missing src is not an error (a module without dependencies has none).
func mergeGoSum(dst, src string) error {
	extra, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	have, err := os.ReadFile(dst)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	seen := make(map[string]bool)
	for _, line := range strings.Split(string(have), "\n") {
		seen[strings.TrimSpace(line)] = true
	}
	var add bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(extra))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || seen[line] {
			continue
		}
		seen[line] = true
		add.WriteString(line)
		add.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if add.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if len(have) > 0 && have[len(have)-1] != '\n' {
		if _, err := f.Write([]byte{'\n'}); err != nil {
			f.Close()
			return err
		}
	}
	if _, err := f.Write(add.Bytes()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runGo runs the go command with args in dir, its standard output going to
// o.Stderr like its standard error (go build prints nothing useful on
// standard output).
func runGo(ctx context.Context, o Options, dir, step string, args ...string) error {
	return runGoOut(ctx, o, dir, o.Stderr, step, args...)
}

// runGoOut runs the go command with args in dir, writing its standard
// output to stdout (nil discards it). step names the command in errors.
func runGoOut(ctx context.Context, o Options, dir string, stdout io.Writer, step string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if stdout == nil {
		stdout = io.Discard
	}
	cmd.Stdout = stdout
	if o.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, o.Stderr)
	} else {
		cmd.Stderr = &stderr
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return fmt.Errorf("custombuild: %s: %w", step, err)
		}
		return fmt.Errorf("custombuild: %s: %w\n%s", step, err, msg)
	}
	return nil
}

// FindModuleRoot walks up from start (a file or folder) to the first folder
// whose go.mod declares module path modulePath and returns that folder.
// It is meant for tools run from inside a checkout; it reads go.mod files
// only and starts no commands.
func FindModuleRoot(start, modulePath string) (string, error) {
	dir, err := filepath.Abs(start)
	if err != nil {
		return "", fmt.Errorf("custombuild: find module root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		switch {
		case err == nil:
			if goModPath(data) == modulePath {
				return dir, nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("custombuild: find module root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("custombuild: no go.mod of module %s in %s or its parents", modulePath, start)
		}
		dir = parent
	}
}

// goModPath returns the module path declared by the go.mod content data, or
// "" if there is none.
func goModPath(data []byte) string {
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "module" {
			return strings.Trim(fields[1], "\"`")
		}
	}
	return ""
}
