// SPDX-License-Identifier: GPL-3.0-or-later

// Command notify-bench measures storage.notify against stock maddy (and
// Dovecot with NOTIFY, when installed) with real maddy processes and real
// IMAP clients on loopback, and writes the report docs/benchmarks.md.
//
//	make bench                        # all scenarios, writes docs/benchmarks.md
//	go run ./cmd/notify-bench -quick -o /tmp/bench.md   # smoke run, < 2 minutes
//
// It builds two maddy v0.8.2 binaries: stock maddy, from a copy of the Go
// module cache's maddy source with nothing linked in, and maddy with this
// checkout's storage.notify linked in as internal/custombuild does. Both are
// built by the same function from the same copy of maddy's source, with one
// extra file that serves net/http/pprof when $NOTIFY_BENCH_PPROF is set:
// the harness uses it to force a GC before it reads heap figures (and for
// -profile).
//
// Scenarios (see docs/benchmarks.md for what each measures):
//
//	1  APPEND → EXISTS, stock vs notify, interleaved sample by sample
//	2  APPEND → STATUS, CREATE → LIST, APPEND → FETCH; stock EXISTS and
//	   Dovecot in the same run
//	3  10,000 IDLE sessions: delivery latency, idle CPU, memory per session
//	4  Go benchmark: dispatch cost with 100 … 100,000 unrelated sessions
//	5  a burst of 1,000 APPENDs: STATUS lines and STATUS queries
//	6  APPEND on instance A → STATUS on instance B (PostgreSQL)
//	7  SMTP delivery to an account with 10 … 10,000 folders: CPU per
//	   delivery and STATUS latency, stock vs notify
//
// Every latency is measured twice: from the acting session's tagged OK to
// the moment the IDLE session's reader read the line off the socket, and
// from the moment the acting session's command was written.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/custombuild"
)

type options struct {
	quick      bool
	only       string
	out        string
	raw        string
	n1, n2, n6 int
	n7         int
	folders    []int
	warm       int
	dovecotN   int
	accounts   int
	perAcct    int
	setupConc  int
	trickle    int
	rate       float64
	idleCPU    time.Duration
	burst      int
	burstSess  int
	benchtime  string
	benchcount int
	pg         string
	profile    bool
	maxBusy    float64

	// scale-client mode (the separate client process of scenario 3)
	scaleClient bool
	addr        string
	status      bool
}

type bench struct {
	o         options
	root      string
	base      string
	stockBin  string
	notifyBin string
	rep       *report
	dovecot   *dovecotProc
	started   time.Time
	buildCmds []string

	s2StatusP50, s2StatusSendP50 time.Duration
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "smoke run of every scenario with small counts (under 2 minutes)")
	flag.StringVar(&o.only, "only", "", "comma-separated scenarios to run (1-7); default all")
	flag.StringVar(&o.out, "o", "docs/benchmarks.md", "report to write")
	flag.StringVar(&o.raw, "raw", "build/bench", "folder for raw samples (CSV) and profiles; empty: none")
	flag.IntVar(&o.n1, "n1", 1000, "scenario 1: samples per series")
	flag.IntVar(&o.n2, "n2", 1000, "scenario 2: samples per maddy series")
	flag.IntVar(&o.n6, "n6", 1000, "scenario 6: samples per series")
	flag.IntVar(&o.n7, "n7", 200, "scenario 7: measured deliveries per process and folder count")
	folders := flag.String("folders", "10,1000,10000", "scenario 7: comma-separated folder counts of the account")
	flag.IntVar(&o.warm, "warm", 20, "warm-up samples per latency series (not recorded)")
	flag.IntVar(&o.dovecotN, "dovecot-samples", 60, "scenario 2: samples per Dovecot series (~0.5 s each; 0: skip Dovecot)")
	flag.IntVar(&o.accounts, "accounts", 1000, "scenario 3: accounts")
	flag.IntVar(&o.perAcct, "sessions-per-account", 10, "scenario 3: IDLE sessions per account")
	flag.IntVar(&o.setupConc, "setup-concurrency", 32, "scenario 3: concurrent logins while setting up")
	flag.IntVar(&o.trickle, "trickle", 600, "scenario 3: changes in the trickle")
	flag.Float64Var(&o.rate, "rate", 20, "scenario 3: changes per second in the trickle")
	flag.DurationVar(&o.idleCPU, "idle-cpu", 10*time.Second, "scenario 3: window for maddy's CPU while nothing changes")
	flag.IntVar(&o.burst, "burst", 1000, "scenario 5: APPENDs in the burst")
	flag.IntVar(&o.burstSess, "burst-sessions", 10, "scenario 5: IDLE sessions of the account")
	flag.StringVar(&o.benchtime, "benchtime", "20000x", "scenario 4: go test -benchtime")
	flag.IntVar(&o.benchcount, "benchcount", 5, "scenario 4: go test -count")
	flag.StringVar(&o.pg, "pg", "host=127.0.0.1 port=5432 user=postgres sslmode=disable", "scenario 6: lib/pq DSN of a PostgreSQL server (without dbname) that may CREATE DATABASE")
	flag.BoolVar(&o.profile, "profile", false, "write CPU profiles of maddy (scenarios 2, 3) to the -raw folder")
	flag.Float64Var(&o.maxBusy, "max-busy", 0.15, "before each scenario, wait (up to 3 minutes) until less than this share of the machine's CPU time is busy (3 s sample); 0: do not wait")
	flag.BoolVar(&o.scaleClient, "scale-client", false, "internal: run as scenario 3's client process")
	flag.StringVar(&o.addr, "addr", "", "internal: scale-client's IMAP address")
	flag.BoolVar(&o.status, "status", false, "internal: scale-client expects STATUS lines")
	flag.Parse()
	var err error
	if o.folders, err = parseInts(*folders); err != nil {
		fmt.Fprintln(os.Stderr, "notify-bench: -folders:", err)
		os.Exit(2)
	}

	if o.scaleClient {
		if err := runScaleClient(o); err != nil {
			fmt.Fprintln(os.Stderr, "notify-bench scale client:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		o.n1, o.n2, o.n6, o.warm = 100, 100, 100, 5
		o.n7 = 50
		o.dovecotN = 4
		o.accounts, o.perAcct = 100, 10
		o.trickle, o.rate = 40, 20
		o.idleCPU = 3 * time.Second
		o.burst = 200
		o.benchtime, o.benchcount = "2000x", 1
	}
	if o.profile {
		memProfileRate = 4096
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "notify-bench:", err)
		os.Exit(1)
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.0fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) progress(what string) func(string) {
	return func(s string) { b.logf("%s: %s", what, s) }
}

func (b *bench) wants(s int) bool {
	if b.o.only == "" {
		return true
	}
	for _, f := range strings.Split(b.o.only, ",") {
		if strings.TrimSpace(f) == strconv.Itoa(s) {
			return true
		}
	}
	return false
}

func run(o options) error {
	b := &bench{o: o, started: time.Now(), rep: newReport()}
	wd, _ := os.Getwd()
	root, err := custombuild.FindModuleRoot(wd, custombuild.DefaultModule)
	if err != nil {
		return err
	}
	b.root = root
	if !filepath.IsAbs(o.out) {
		b.o.out = filepath.Join(root, o.out)
	}
	if o.raw != "" && !filepath.IsAbs(o.raw) {
		b.o.raw = filepath.Join(root, o.raw)
	}
	if b.o.raw != "" {
		if err := os.MkdirAll(b.o.raw, 0o755); err != nil {
			return err
		}
	}
	if err := raiseNofile(); err != nil {
		return err
	}
	b.base, err = os.MkdirTemp("", "notify-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.base)

	b.logf("building maddy %s: stock and with storage.notify", maddyVersion)
	var buildLog bytes.Buffer
	b.stockBin = filepath.Join(b.base, "maddy-stock")
	b.notifyBin = filepath.Join(b.base, "maddy-notify")
	ctx := context.Background()
	cmdStock, err := buildMaddy(ctx, b.stockBin, "", &buildLog)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, buildLog.String())
	}
	cmdNotify, err := buildMaddy(ctx, b.notifyBin, root, &buildLog)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, buildLog.String())
	}
	b.buildCmds = []string{cmdStock, cmdNotify}

	b.rep.loadStart = loadavg()
	type scen struct {
		n  int
		fn func() error
	}
	for _, s := range []scen{{1, b.scenario1}, {2, b.scenario2}, {3, b.scenario3}, {4, b.scenario4}, {5, b.scenario5}, {6, b.scenario6}, {7, b.scenario7}} {
		if !b.wants(s.n) {
			continue
		}
		busy := b.waitIdle(fmt.Sprintf("scenario %d", s.n))
		t0 := time.Now()
		b.logf("scenario %d: start (machine %.0f%% busy before it, load %s)", s.n, 100*busy, loadavg())
		b.rep.loads = append(b.rep.loads, fmt.Sprintf("scenario %d: %.0f%%", s.n, 100*busy))
		if err := s.fn(); err != nil {
			b.rep.p("**Scenario %d failed:** %v", s.n, err)
			b.rep.p("")
			b.rep.target(strconv.Itoa(s.n), "scenario ran", "failed: "+firstLine(err.Error()), false)
			b.logf("scenario %d failed: %v", s.n, err)
		}
		b.rep.durations = append(b.rep.durations, fmt.Sprintf("scenario %d: %.0f s", s.n, time.Since(t0).Seconds()))
		b.logf("scenario %d: done in %.0f s", s.n, time.Since(t0).Seconds())
	}
	b.rep.loadEnd = loadavg()
	b.rep.total = time.Since(b.started)
	if err := os.MkdirAll(filepath.Dir(b.o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.o.out, []byte(b.render()), 0o644); err != nil {
		return err
	}
	b.logf("wrote %s", b.o.out)
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// raiseNofile raises the soft limit of open files to the hard limit; maddy
// and the scale client inherit it.
func raiseNofile() error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	rl.Cur = rl.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

func nofile() (cur, max uint64) {
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur, rl.Max
}

// loadavg returns /proc/loadavg's three load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuBusy returns the share of the machine's CPU time (all cores) that was
// not idle during d, from /proc/stat.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total float64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
			if i != 3 && i != 4 { // idle, iowait
				busy += x
			}
		}
		return busy, total
	}
	b0, t0 := read()
	time.Sleep(d)
	b1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0)
}

// waitIdle waits until the machine is otherwise idle: less than -max-busy
// of its CPU time busy over 3 s (other work would distort the figures), at
// most 3 minutes. It returns the last busy share measured.
func (b *bench) waitIdle(when string) float64 {
	busy := cpuBusy(3 * time.Second)
	if b.o.maxBusy <= 0 {
		return busy
	}
	deadline := time.Now().Add(3 * time.Minute)
	for busy >= b.o.maxBusy && time.Now().Before(deadline) {
		b.logf("%s: the machine is %.0f%% busy (≥ %.0f%%), waiting for it to be idle", when, 100*busy, 100*b.o.maxBusy)
		time.Sleep(5 * time.Second)
		busy = cpuBusy(3 * time.Second)
	}
	return busy
}

func (b *bench) startMaddy(bin, name, body string) (*maddyProc, error) {
	return startMaddy(b.base, bin, name, body, "imap", "metrics")
}

func (b *bench) stopMaddy(p *maddyProc) {
	if err := p.stop(); err != nil {
		b.logf("%v", err)
	}
}

// saveRaw writes every watch's samples to RAW/name.csv.
func (b *bench) saveRaw(name string, probes ...*probe) {
	if b.o.raw == "" {
		return
	}
	var buf bytes.Buffer
	buf.WriteString("series,sample,from_ok_ns,from_send_ns\n")
	for _, p := range probes {
		for _, w := range p.watches {
			for i := range w.fromOK {
				fmt.Fprintf(&buf, "%q,%d,%d,%d\n", w.label, i, w.fromOK[i].Nanoseconds(), w.fromSend[i].Nanoseconds())
			}
		}
	}
	os.WriteFile(filepath.Join(b.o.raw, name+".csv"), buf.Bytes(), 0o644)
}

// machine describes the host for the report.
func machine() []string {
	var out []string
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-srm").Output()
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				f := strings.Fields(v)
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	cur, max := nofile()
	out = append(out,
		fmt.Sprintf("CPU: %s, `nproc` %d (GOMAXPROCS %d)", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0)),
		fmt.Sprintf("memory: %s", mem),
		fmt.Sprintf("kernel: %s", strings.TrimSpace(string(kernel))),
		fmt.Sprintf("Go: %s", goVersion()),
		fmt.Sprintf("open files limit (harness, inherited by maddy and the scale client): soft %d, hard %d", cur, max),
	)
	return out
}

func goVersion() string {
	b, err := exec.Command("go", "version").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(b))
}

// commit describes the checkout: HEAD and whether the tree differs from it.
func (b *bench) commit() string {
	head, err := exec.Command("git", "-C", b.root, "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	s := strings.TrimSpace(string(head))
	// Uncommitted changes to the code that is linked into maddy (test
	// files and this harness are not).
	st, _ := exec.Command("git", "-C", b.root, "status", "--porcelain", "--untracked-files=all").Output()
	var files []string
	for _, l := range strings.Split(string(st), "\n") {
		if len(l) <= 3 {
			continue
		}
		f := strings.TrimSpace(l[3:])
		if !strings.HasSuffix(f, ".go") || strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "cmd/") || strings.HasPrefix(f, "internal/") {
			continue
		}
		files = append(files, "`"+f+"`")
	}
	if len(files) > 0 {
		s += ", with uncommitted changes to " + strings.Join(files, ", ")
	} else {
		s += " (the module's code is as committed)"
	}
	return s
}

var errSkipped = errors.New("skipped")
