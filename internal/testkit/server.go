// SPDX-License-Identifier: GPL-3.0-or-later

// Package testkit runs end-to-end tests against a real maddy process: the
// full maddy v0.8.2 CLI with storage.notify linked in (see
// internal/custombuild).
//
// It owns the test server's process, its temporary folder and the test-side
// connections (raw IMAP, go-imap v2 client, SMTP). Everything it starts is
// tied to a testing.TB and released by t.Cleanup, so a test only says what to
// run and what it expects:
//
//	srv := testkit.Start(t, testkit.Options{
//		Ports:  []string{"imap"},
//		Config: `... imap tcp://127.0.0.1:{port:imap} { tls off; auth dummy; storage &notified_mailboxes }`,
//	})
//	b := testkit.DialRaw(t, srv.Addr("imap"))
//	b.Login("user@maddy.test", "any")
//
// The package is for tests only. It imports internal/custombuild and no
// package of the module under test, so it never links storage.notify into the
// test binary: the module is exercised only through the maddy process.
//
// All functions must be called from the test's own goroutine (they call
// t.Fatal). The only goroutines the package starts are one per maddy process
// (it waits for the process to exit) and the reader goroutine of the go-imap
// v2 client returned by DialClient.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/custombuild"
	"github.com/maddy-notify/maddy-notify/internal/maddyproc"
)

// BinaryEnv names the environment variable that points the tests at a
// prebuilt maddy binary (`make test` sets it to build/maddy).
const BinaryEnv = "MADDY_NOTIFY_BINARY"

const (
	// StartTimeout bounds how long Start waits for maddy's listeners and how
	// long CheckConfig and Server.CLI wait for maddy to exit.
	StartTimeout = 30 * time.Second

	// StopTimeout is how long the cleanup of Start waits after SIGTERM
	// before it kills maddy and fails the test.
	StopTimeout = 10 * time.Second

	// Hostname is the global hostname written into every configuration.
	Hostname = "maddy.test"

	// PreambleLines is the number of lines testkit writes before
	// Options.Config: line n of Config is line n+PreambleLines of
	// maddy.conf, the file maddy names in its error messages.
	PreambleLines = 4
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the absolute path of the maddy binary the tests run.
//
// If $MADDY_NOTIFY_BINARY is set, Binary returns it; the file must exist.
// Otherwise the first call in the test process builds maddy with the
// checkout containing the working directory linked in (custombuild.Build)
// and later calls return the same result, also when the build failed. The
// binary is built as <repo>/build/.maddy-test-<pid>.tmp and renamed to
// <repo>/build/maddy-test, so concurrently running test processes (go test
// ./...) never see a half-written file and no stale per-process binaries
// pile up; the one file is overwritten by the next test run. A failed build
// fails t with the go command's output.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("testkit: $%s=%q: %v", BinaryEnv, p, err)
		}
		if st, err := os.Stat(abs); err != nil {
			t.Fatalf("testkit: $%s: %v", BinaryEnv, err)
		} else if st.IsDir() {
			t.Fatalf("testkit: $%s=%q is a folder", BinaryEnv, abs)
		}
		return abs
	}
	buildOnce.Do(func() {
		buildPath, buildErr = build()
	})
	if buildErr != nil {
		t.Fatalf("testkit: build maddy (set $%s to use a prebuilt binary): %v", BinaryEnv, buildErr)
	}
	return buildPath
}

// build builds maddy into <repo>/build/maddy-test and returns its path.
func build() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root, err := custombuild.FindModuleRoot(wd, custombuild.DefaultModule)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "build")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	final := filepath.Join(dir, "maddy-test")
	tmp := filepath.Join(dir, fmt.Sprintf(".maddy-test-%d.tmp", os.Getpid()))
	var log bytes.Buffer
	err = custombuild.Build(context.Background(), custombuild.Options{
		ModuleDir: root,
		Output:    tmp,
		Stdout:    &log,
		Stderr:    &log,
	})
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("%w\n%s", err, log.Bytes())
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return final, nil
}

// Options describe a maddy instance for Start and CheckConfig.
type Options struct {
	// Config is the body of maddy.conf. Testkit prepends the global
	// directives state_dir, runtime_dir (temporary folders removed when
	// the test ends) and hostname (Hostname); the body must not repeat
	// them.
	// Every {port:NAME} is replaced by the port allocated for NAME.
	Config string

	// Ports names the TCP ports to allocate. Each name gets a free
	// 127.0.0.1 port; Start waits until all of them accept connections.
	Ports []string

	// Env is appended to the environment of maddy and of Server.CLI
	// ("KEY=value" each). The inherited environment is passed on except
	// variables starting with MADDY_, so $MADDY_CONFIG or $MADDY_CFGBLOCK
	// of the developer never change what a test runs.
	Env []string

	// RuntimeDir, if set, is the runtime_dir instead of a fresh folder, so
	// that two instances can share one (their unix sockets meet there).
	// The caller creates it (NewRuntimeDir) and its path must be short.
	RuntimeDir string
}

// Server is a running maddy process started by Start. Its methods must be
// called from the test's goroutine and not after the test has ended.
type Server struct {
	// Dir is the test's temporary folder: maddy.conf, maddy.log and the
	// state/ folder (state_dir) live here. runtime_dir is a short-named
	// folder of its own under /tmp or os.TempDir(), removed when the test
	// ends.
	Dir string
	// RuntimeDir is maddy's runtime_dir (Options.RuntimeDir, or the
	// short-named folder testkit made).
	RuntimeDir string

	t      testing.TB
	bin    string
	config string
	env    []string
	ports  map[string]int

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // valid once exited is closed
	early   bool          // Start already reported that maddy exited, or a dump ended it
}

// Start writes the configuration into t.TempDir(), starts
// `maddy --config FILE run` with its standard output and error going to
// Dir/maddy.log, and waits until every port in o.Ports accepts a TCP
// connection (these probe connections show up in maddy's log as
// connections closed by the peer). It fails t if maddy exits first or the
// ports are not up within StartTimeout.
//
// Start registers a cleanup that sends SIGTERM and waits for maddy to exit;
// after StopTimeout it kills maddy and fails the test (a hang on shutdown
// is a bug). The cleanup also fails the test if maddy exited on its own or
// with a non-zero status, and logs maddy's log if the test failed.
// Cleanups registered after Start (connections) run before it.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := prepare(t, o)

	logFile, err := os.Create(filepath.Join(s.Dir, "maddy.log"))
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	defer logFile.Close() // the child has its own descriptor

	cmd := exec.Command(s.bin, "--config", s.config, "run")
	cmd.Dir = s.Dir
	cmd.Env = s.env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("testkit: start maddy: %v", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)

	if err := maddyproc.WaitPorts(s.ports, s.exited, StartTimeout); err != nil {
		if errors.Is(err, maddyproc.ErrExited) {
			s.early = true
			t.Fatalf("testkit: %v: %v", err, s.waitErr)
		}
		t.Fatalf("testkit: %v", err)
	}
	return s
}

// prepare allocates the ports and writes maddy.conf into a new temporary
// folder of t.
func prepare(t testing.TB, o Options) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		Dir:    dir,
		t:      t,
		bin:    Binary(t),
		config: filepath.Join(dir, "maddy.conf"),
		ports:  make(map[string]int, len(o.Ports)),
	}
	for _, name := range o.Ports {
		if _, dup := s.ports[name]; dup {
			t.Fatalf("testkit: port %q listed twice", name)
		}
		port, err := maddyproc.FreePort()
		if err != nil {
			t.Fatalf("testkit: %v", err)
		}
		s.ports[name] = port
	}

	body, err := maddyproc.ExpandPorts(o.Config, s.ports)
	if err != nil {
		t.Fatalf("testkit: %v (Options.Ports lists the names)", err)
	}
	// runtime_dir holds unix sockets (imapsql's update pipe is
	// sql-<40 hex digits>.sock in it), whose paths must stay under 104
	// bytes: t.TempDir() contains the test's name and is often longer,
	// and so is $TMPDIR on macOS.
	runDir := o.RuntimeDir
	if runDir == "" {
		runDir = NewRuntimeDir(t)
	}
	s.RuntimeDir = runDir
	preamble := fmt.Sprintf("state_dir %s\nruntime_dir %s\nhostname %s\n\n",
		filepath.Join(dir, "state"), runDir, Hostname)
	if n := strings.Count(preamble, "\n"); n != PreambleLines {
		panic(fmt.Sprintf("testkit: preamble has %d lines, PreambleLines says %d", n, PreambleLines))
	}
	if err := os.WriteFile(s.config, []byte(preamble+body), 0o600); err != nil {
		t.Fatalf("testkit: %v", err)
	}

	s.env = maddyproc.Env(o.Env...)
	return s
}

// NewRuntimeDir creates a short-named folder for runtime_dir (0700, as
// maddy makes it), removed when the test ends. Start makes one per
// instance; a test makes one itself to share it (Options.RuntimeDir).
func NewRuntimeDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	runDir, err := os.MkdirTemp(base, "maddy-run-")
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	return runDir
}

// Prepare writes the configuration as Start does but starts no server: the
// Server's CLI methods then run maddy's management commands with nobody
// running (Port, Addr and Log are not for such a Server).
func Prepare(t testing.TB, o Options) *Server {
	t.Helper()
	return prepare(t, o)
}

// stop is the cleanup registered by Start.
func (s *Server) stop() {
	t := s.t
	select {
	case <-s.exited:
		if !s.early {
			t.Errorf("testkit: maddy exited during the test: %v", s.waitErr)
		}
	default:
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("testkit: signal maddy: %v", err)
		}
		select {
		case <-s.exited:
			if s.waitErr != nil {
				t.Errorf("testkit: maddy did not stop cleanly: %v", s.waitErr)
			}
		case <-time.After(StopTimeout):
			s.cmd.Process.Kill()
			<-s.exited
			t.Errorf("testkit: maddy did not stop within %v of SIGTERM (deadlock?); killed it", StopTimeout)
		}
	}
	if t.Failed() {
		t.Logf("--- maddy log (%s) ---\n%s", filepath.Join(s.Dir, "maddy.log"), s.Log())
	}
}

// DumpGoroutines ends maddy with SIGQUIT, which makes the Go runtime write
// the stack of every goroutine to maddy's log, and returns that part of the
// log. It is for the failure path of a test (a goroutine leak): maddy is
// gone afterwards, and its exit is not reported as an error.
func (s *Server) DumpGoroutines() string {
	select {
	case <-s.exited:
		return "(maddy has exited already)"
	default:
	}
	s.early = true
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return fmt.Sprintf("(cannot signal maddy: %v)", err)
	}
	select {
	case <-s.exited:
	case <-time.After(StopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		return "(maddy did not exit on SIGQUIT; killed it)"
	}
	log := s.Log()
	if i := strings.Index(log, "SIGQUIT"); i >= 0 {
		return log[i:]
	}
	return log
}

// Crash ends maddy with SIGKILL, as a crash would: it does not shut down,
// so its unix sockets stay behind in runtime_dir. Its exit is not reported
// as an error.
func (s *Server) Crash() {
	s.t.Helper()
	select {
	case <-s.exited:
		s.t.Fatalf("testkit: Crash: maddy has exited already: %v", s.waitErr)
	default:
	}
	s.early = true
	if err := s.cmd.Process.Kill(); err != nil {
		s.t.Fatalf("testkit: kill maddy: %v", err)
	}
	<-s.exited
}

// Port returns the port allocated for name; it fails the test for a name
// that Options.Ports did not list.
func (s *Server) Port(name string) int {
	s.t.Helper()
	port, ok := s.ports[name]
	if !ok {
		s.t.Fatalf("testkit: no port named %q", name)
	}
	return port
}

// Addr returns "127.0.0.1:PORT" for the port allocated for name.
func (s *Server) Addr(name string) string {
	s.t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port(name)))
}

// Log returns what maddy has written to its standard output and error so
// far.
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "maddy.log"))
	if err != nil {
		return fmt.Sprintf("(cannot read maddy.log: %v)", err)
	}
	return string(b)
}

// CLI runs `maddy --config FILE args...` with the server's configuration and
// environment and an empty standard input, and returns what it printed.
// err is non-nil if the command did not exit with status 0 or did not exit
// within StartTimeout.
//
// Management subcommands (imap-acct, imap-mboxes, imap-msgs, creds) open the
// configured blocks next to the running server, as an operator would.
func (s *Server) CLI(args ...string) (stdout, stderr string, err error) {
	return s.CLIInput("", args...)
}

// CLIInput is CLI with input as the command's standard input (imap-msgs add
// reads the message from there).
func (s *Server) CLIInput(input string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	var outBuf, errBuf bytes.Buffer
	cmd := exec.CommandContext(ctx, s.bin, append([]string{"--config", s.config}, args...)...)
	cmd.Dir = s.Dir
	cmd.Env = s.env
	cmd.Stdin = strings.NewReader(input)
	cmd.WaitDelay = time.Second
	cmd.Stdout = &outBuf
	cmd.Stderr = &errBuf
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("maddy %s: no exit within %v: %w", strings.Join(args, " "), StartTimeout, err)
	}
	return outBuf.String(), errBuf.String(), err
}

// MustCLI is CLI that fails the test (with both outputs) unless the command
// succeeds; it returns the standard output.
func (s *Server) MustCLI(args ...string) string {
	s.t.Helper()
	return s.MustCLIInput("", args...)
}

// MustCLIInput is CLIInput that fails the test unless the command succeeds;
// it returns the standard output.
func (s *Server) MustCLIInput(input string, args ...string) string {
	s.t.Helper()
	stdout, stderr, err := s.CLIInput(input, args...)
	if err != nil {
		s.t.Fatalf("testkit: maddy %s: %v\n--- stdout ---\n%s--- stderr ---\n%s",
			strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

// CheckConfig runs `maddy --config FILE run` for a configuration that is
// expected to be rejected, and returns how maddy exited (nil for status 0,
// else typically an *exec.ExitError) and everything it printed. It fails
// the test if maddy is still running after StartTimeout: the configuration
// was accepted.
func CheckConfig(t testing.TB, o Options) (exitErr error, output string) {
	t.Helper()
	s := prepare(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, s.bin, "--config", s.config, "run")
	cmd.Dir = s.Dir
	cmd.Env = s.env
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("testkit: maddy still running after %v, the configuration was accepted\n--- output ---\n%s", StartTimeout, out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("testkit: run maddy: %v", err)
	}
	return err, out.String()
}
