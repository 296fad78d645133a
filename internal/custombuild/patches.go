// SPDX-License-Identifier: GPL-3.0-or-later

package custombuild

// This file holds every change the custom build makes to copied third-party
// source: three named patches, each meant to be offered upstream (the
// unified diffs, the reasons and the tests are in docs/maddy-changes.md).
//
//   - serverExtensionsDoor, in maddy's internal/endpoint/imap/imap.go: the
//     IMAP endpoint enables the go-imap server extensions a storage returns
//     from an optional method (ServerExtensionsMethod). Without it a storage
//     cannot add a command such as NOTIFY: the endpoint enables a fixed list
//     before its listeners start, and a later Server.Enable races with every
//     connection.
//   - idleDoneBuffered, in the go-imap v1 fork maddy replaces go-imap with:
//     IDLE reads DONE through the connection's own buffered reader, so a
//     command pipelined after DONE is answered instead of lost.
//   - idleAnswersAfterMailbox, in the same fork: IDLE writes its tagged OK
//     only once the mailbox's Idle has returned, so that nothing a backend
//     writes in IDLE follows it.
//
// A patch is a list of exact text replacements. Build refuses loudly (an
// error naming the file and the text it expected) when the source does not
// have the expected shape, and leaves a file alone that already carries
// the change.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ServerExtensionsMethod is the name of the optional storage method the
// patched IMAP endpoint calls: a storage that has
//
//	IMAPServerExtensions() []server.Extension
//
// (server is github.com/emersion/go-imap/server) gets each returned
// extension enabled on the endpoint's IMAP server, before COMPRESS and
// NAMESPACE and before any listener starts. It is distinct from
// module.Storage's IMAPExtensions, which lists capability names. The
// storage.notify module implements it; a test holds the two together.
const ServerExtensionsMethod = "IMAPServerExtensions"

// goIMAPModule is the module path maddy imports go-imap v1 by; maddy's go.mod
// replaces it with foxcpp's fork.
const goIMAPModule = "github.com/emersion/go-imap"

// edit is one exact text replacement in one file.
type edit struct {
	// file is the path relative to the module root, slash-separated.
	file string
	// old must occur exactly once in an unpatched file; new replaces it.
	// A file that contains new already has the edit, so new must not
	// occur in an unpatched file.
	old, new string
}

// text is a text a file must contain for a patch to fit.
type text struct {
	file, text string
}

// patch is one named change to a module's source: either all its edits are
// applied or, if all are present already, none is.
type patch struct {
	name     string
	edits    []edit
	requires []text
}

// serverExtensionsDoor is the change to maddy's IMAP endpoint that lets a
// storage enable go-imap server extensions (see ServerExtensionsMethod).
var serverExtensionsDoor = patch{
	name: "storage IMAP server extensions",
	edits: []edit{{
		file: "internal/endpoint/imap/imap.go",
		old: `func (endp *Endpoint) enableExtensions() error {
	exts := endp.Store.IMAPExtensions()
	for _, ext := range exts {
		switch ext {
		case "I18NLEVEL=1", "I18NLEVEL=2":
			endp.serv.Enable(i18nlevel.NewExtension())
		case "SORT":
			endp.serv.Enable(sortthread.NewSortExtension())
		}
		if strings.HasPrefix(ext, "THREAD") {
			endp.serv.Enable(sortthread.NewThreadExtension())
		}
	}

	endp.serv.Enable(compress.NewExtension())
`,
		new: `// ServerExtensionsStorage is an optional interface of a storage: the IMAP
// endpoint calls ` + ServerExtensionsMethod + ` once, from Init, before
// its listeners start, and enables each extension it returns.
type ServerExtensionsStorage interface {
	` + ServerExtensionsMethod + `() []imapserver.Extension
}

func (endp *Endpoint) enableExtensions() error {
	exts := endp.Store.IMAPExtensions()
	for _, ext := range exts {
		switch ext {
		case "I18NLEVEL=1", "I18NLEVEL=2":
			endp.serv.Enable(i18nlevel.NewExtension())
		case "SORT":
			endp.serv.Enable(sortthread.NewSortExtension())
		}
		if strings.HasPrefix(ext, "THREAD") {
			endp.serv.Enable(sortthread.NewThreadExtension())
		}
	}

	if s, ok := endp.Store.(ServerExtensionsStorage); ok {
		for _, ext := range s.` + ServerExtensionsMethod + `() {
			endp.serv.Enable(ext)
		}
	}

	endp.serv.Enable(compress.NewExtension())
`,
	}},
	// The interface above names imapserver.Extension.
	requires: []text{{
		file: "internal/endpoint/imap/imap.go",
		text: "\timapserver \"github.com/emersion/go-imap/server\"\n",
	}},
}

// idleDoneBuffered is the change to the go-imap v1 fork's server that makes
// IDLE read DONE through the connection's buffered reader. The stock
// handler wraps the connection in a new bufio.Scanner, which reads the raw
// net.Conn (imap.Conn's Read is its net.Conn's) and keeps whatever followed
// DONE in its own buffer, thrown away when the handler returns: "DONE\r\n
// a NOOP\r\n" in one packet never gets "a OK". The handler runs on the
// connection's serve goroutine, the only reader of that buffered reader
// (the send goroutine only writes; upgrades happen between commands), so
// reading it there is sound. readLine is a method of the Conn interface
// (unexported, like serve) so that a Conn wrapped by a ConnExtension has it
// too.
var idleDoneBuffered = patch{
	name: "IDLE reads DONE through the connection's buffered reader",
	edits: []edit{{
		file: "server/cmd_auth.go",
		old: `	// Wait for DONE
	scanner := bufio.NewScanner(conn)
	scanner.Scan()
	if err := scanner.Err(); err != nil {
		return err
	}

	if strings.ToUpper(scanner.Text()) != "DONE" {
		return errors.New("Expected DONE")
	}
`,
		new: `	// Wait for DONE. It is read through the connection's buffered reader:
	// a command the client sent right after DONE stays there for the next
	// ReadLine instead of being lost.
	line, err := conn.readLine()
	if err != nil {
		return err
	}

	if strings.ToUpper(line) != "DONE" {
		return errors.New("Expected DONE")
	}
`,
	}, {
		file: "server/cmd_auth.go",
		old: `import (
	"bufio"
	"errors"
	"strings"
`,
		new: `import (
	"errors"
	"strings"
`,
	}, {
		file: "server/conn.go",
		old: `	setTLSConn(*tls.Conn)
	serve(Conn) error
`,
		new: `	setTLSConn(*tls.Conn)
	serve(Conn) error
	readLine() (string, error)
`,
	}, {
		file: "server/conn.go",
		old: `func (c *conn) silent() *bool {
`,
		new: `// maxIdleLine bounds the line readLine reads (bufio.Scanner's 64 KiB
// bounded the stock handler's): a client that never ends it is refused.
const maxIdleLine = 8192

// readLine reads one line through the buffered reader commands are read
// with and returns it without its line ending. Only a command handler may
// call it (it runs on the goroutine that reads commands).
func (c *conn) readLine() (string, error) {
	var line strings.Builder
	for line.Len() < maxIdleLine {
		r, _, err := c.Conn.Reader.ReadRune()
		if err != nil {
			return "", err
		}
		if r == '\n' {
			return strings.TrimSuffix(line.String(), "\r"), nil
		}
		line.WriteRune(r)
	}
	return "", errors.New("line too long")
}

func (c *conn) silent() *bool {
`,
	}, {
		file: "server/conn.go",
		old: `	"runtime/debug"
	"time"
`,
		new: `	"runtime/debug"
	"strings"
	"time"
`,
	}},
}

// idleAnswersAfterMailbox is the change to the go-imap v1 fork's server
// that makes IDLE write its tagged OK only once the mailbox's Idle, which
// the handler runs in a goroutine of its own, has returned. Stock, the
// handler hands DONE to Idle and answers at once, while Idle may still be
// writing: a backend that pushes updates in IDLE (storage.notify's
// plain_clients draft) cannot keep them from landing after the OK, in the
// answer to the client's next command. Where Idle returns without taking
// DONE, the handler no longer blocks forever on handing it over.
var idleAnswersAfterMailbox = patch{
	name: "IDLE answers after the mailbox's Idle returned",
	edits: []edit{{
		file: "server/cmd_auth.go",
		old: `	done := make(chan struct{})
	go ctx.Mailbox.Idle(done)
	defer func() {
		done <- struct{}{}
	}()
`,
		new: `	done := make(chan struct{})
	idled := make(chan struct{})
	go func() {
		defer close(idled)
		ctx.Mailbox.Idle(done)
	}()
	// The tagged OK goes out once Idle has returned: nothing it writes
	// can follow it.
	defer func() {
		select {
		case done <- struct{}{}:
		case <-idled:
		}
		<-idled
	}()
`,
	}},
}

// applyPatches makes the changes of this file: serverExtensionsDoor to the
// maddy source in tree (a writable copy), and idleDoneBuffered and
// idleAnswersAfterMailbox to a copy of
// the go-imap module maddy builds with, made in scratch and put in place by
// a replace directive in tree's go.mod (it takes the place of maddy's own
// replace of go-imap with the fork; a directory replacement needs no go.sum
// line). Progress lines go to out.
func applyPatches(ctx context.Context, o Options, scratch, tree string, out io.Writer) error {
	if err := applyReport(out, serverExtensionsDoor, tree); err != nil {
		return err
	}

	src, err := goIMAPSource(ctx, o, tree)
	if err != nil {
		return err
	}
	dir, err := downloadDir(ctx, o, scratch, src)
	if err != nil {
		return err
	}
	goIMAP := filepath.Join(scratch, "go-imap")
	fmt.Fprintf(out, "custombuild: copying %s to %s\n", dir, goIMAP)
	if err := copyTree(dir, goIMAP); err != nil {
		return fmt.Errorf("custombuild: copy %s source: %w", src, err)
	}
	for _, p := range []patch{idleDoneBuffered, idleAnswersAfterMailbox} {
		if err := applyReport(out, p, goIMAP); err != nil {
			return err
		}
	}
	return runGo(ctx, o, tree, "go mod edit", "mod", "edit", "-replace="+goIMAPModule+"="+goIMAP)
}

// applyReport applies p to the module tree rooted at root and says so on
// out.
func applyReport(out io.Writer, p patch, root string) error {
	applied, err := p.apply(root)
	if err != nil {
		return err
	}
	if applied {
		fmt.Fprintf(out, "custombuild: patch %q applied to %s\n", p.name, root)
	} else {
		fmt.Fprintf(out, "custombuild: patch %q already present in %s\n", p.name, root)
	}
	return nil
}

// apply applies p to the module tree rooted at root. It returns false and
// changes nothing if every edit is present already. It fails, naming the
// file and the text it expected, if a required text is missing, if the
// text an edit replaces does not occur exactly once, or if some edits are
// present and others are not; then no file is written.
func (p patch) apply(root string) (applied bool, err error) {
	files := make(map[string]string)
	read := func(file string) (string, string, error) {
		path := filepath.Join(root, filepath.FromSlash(file))
		if src, ok := files[path]; ok {
			return path, src, nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return path, "", fmt.Errorf("custombuild: patch %q: %w", p.name, err)
		}
		files[path] = string(b)
		return path, string(b), nil
	}

	for _, r := range p.requires {
		path, src, err := read(r.file)
		if err != nil {
			return false, err
		}
		if !strings.Contains(src, r.text) {
			return false, fmt.Errorf("custombuild: patch %q: %s does not have the expected shape: it lacks\n%s", p.name, path, r.text)
		}
	}

	var present, missing []string
	for _, e := range p.edits {
		path, src, err := read(e.file)
		if err != nil {
			return false, err
		}
		if strings.Contains(src, e.new) {
			present = append(present, path)
		} else {
			missing = append(missing, path)
		}
	}
	switch {
	case len(missing) == 0:
		return false, nil
	case len(present) > 0:
		return false, fmt.Errorf("custombuild: patch %q is partly present: edits found in %s, missing in %s",
			p.name, strings.Join(present, ", "), strings.Join(missing, ", "))
	}

	for _, e := range p.edits {
		path, src, _ := read(e.file)
		if n := strings.Count(src, e.old); n != 1 {
			return false, fmt.Errorf("custombuild: patch %q: %s does not have the expected shape: want exactly one occurrence of\n%s(found %d)", p.name, path, e.old, n)
		}
		files[path] = strings.Replace(src, e.old, e.new, 1)
	}
	for path, src := range files {
		info, err := os.Stat(path)
		if err != nil {
			return false, fmt.Errorf("custombuild: patch %q: %w", p.name, err)
		}
		if err := os.WriteFile(path, []byte(src), info.Mode().Perm()); err != nil {
			return false, fmt.Errorf("custombuild: patch %q: %w", p.name, err)
		}
	}
	return true, nil
}

// goIMAPSource returns "module@version" of the go-imap source the maddy
// tree builds with: the target of its replace of goIMAPModule (maddy
// replaces it with foxcpp's fork), or else the version it requires.
func goIMAPSource(ctx context.Context, o Options, tree string) (string, error) {
	type mod struct{ Path, Version string }
	var gomod struct {
		Require []mod
		Replace []struct{ Old, New mod }
	}
	var stdout strings.Builder
	if err := runGoOut(ctx, o, tree, &stdout, "go mod edit -json", "mod", "edit", "-json"); err != nil {
		return "", err
	}
	if err := json.Unmarshal([]byte(stdout.String()), &gomod); err != nil {
		return "", fmt.Errorf("custombuild: go mod edit -json: decode output: %w", err)
	}
	required := ""
	for _, r := range gomod.Require {
		if r.Path == goIMAPModule {
			required = r.Version
		}
	}
	if required == "" {
		return "", fmt.Errorf("custombuild: %s does not require %s", filepath.Join(tree, "go.mod"), goIMAPModule)
	}
	for _, r := range gomod.Replace {
		if r.Old.Path != goIMAPModule || (r.Old.Version != "" && r.Old.Version != required) {
			continue
		}
		if r.New.Version == "" {
			return "", fmt.Errorf("custombuild: %s replaces %s with the folder %s; want a module version",
				filepath.Join(tree, "go.mod"), goIMAPModule, r.New.Path)
		}
		return r.New.Path + "@" + r.New.Version, nil
	}
	return goIMAPModule + "@" + required, nil
}
