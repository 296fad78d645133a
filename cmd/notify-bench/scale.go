// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario 3 runs its IMAP clients in a separate process: the harness
// starts itself with -scale-client, which opens every IDLE session, reports
// "ready" on standard output (one JSON object per line) and then takes
// commands on standard input ("trickle N RATE", "quit").

// scaleMailbox is the mailbox session j of an account selects: 6 of 10 on
// INBOX, 2 on Archive, 2 on Sent.
func scaleMailbox(j int) string {
	switch r := j % 10; {
	case r < 6:
		return "INBOX"
	case r < 8:
		return "Archive"
	default:
		return "Sent"
	}
}

var scaleMailboxes = []string{"INBOX", "Archive", "Sent"}

func scaleAccount(i int) string { return fmt.Sprintf("scale%05d@maddy.test", i) }

// clientMsg is what the scale client reports.
type clientMsg struct {
	Event    string  `json:"event"`
	Sessions int     `json:"sessions,omitempty"`
	SetupS   float64 `json:"setup_s,omitempty"`
	Retries  int64   `json:"retries,omitempty"`

	// trickle results (nanoseconds)
	AllFromOK    []int64 `json:"all_from_ok,omitempty"`
	AllFromSend  []int64 `json:"all_from_send,omitempty"`
	EachFromOK   []int64 `json:"each_from_ok,omitempty"`
	Changes      int     `json:"changes,omitempty"`
	Timeouts     int     `json:"timeouts,omitempty"`
	Dropped      int64   `json:"dropped,omitempty"`
	DurationS    float64 `json:"duration_s,omitempty"`
	AppendRetry  int     `json:"append_retry,omitempty"`
	MissingFirst string  `json:"missing_first,omitempty"`
}

type scaleSession struct {
	conn    *imapConn
	mailbox string
}

func runScaleClient(o options) error {
	if err := raiseNofile(); err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	accounts := make([][]*scaleSession, o.accounts)
	var retries atomic.Int64
	t0 := time.Now()

	open := func(i, j int, first bool) (*scaleSession, error) {
		acct := scaleAccount(i)
		mbox := scaleMailbox(j)
		var lastErr error
		for try := 0; try < 20; try++ {
			if try > 0 {
				retries.Add(1)
				time.Sleep(time.Duration(try*20) * time.Millisecond)
			}
			c, err := dialIMAP(fmt.Sprintf("%s/%d", acct, j), o.addr, 16)
			if err != nil {
				lastErr = err
				continue
			}
			err = c.login(acct, benchPass)
			if err == nil && first {
				for _, m := range []string{"Archive", "Sent"} {
					var res result
					res, err = c.cmd("CREATE " + m)
					if err == nil && !res.ok() && !strings.Contains(res.tagged.text, "exists") {
						err = fmt.Errorf("CREATE %s: %s", m, res.tagged.text)
					}
					if err != nil {
						break
					}
				}
			}
			if err == nil {
				_, err = c.mustOK("SELECT " + mbox)
			}
			if err == nil {
				err = c.idle()
			}
			if err != nil {
				c.close()
				lastErr = err
				continue
			}
			return &scaleSession{conn: c, mailbox: mbox}, nil
		}
		return nil, lastErr
	}
	// Phase 1 creates each account and its mailboxes with its first
	// session; phase 2 opens the others. Bounded concurrency.
	parallel := func(n int, f func(k int) error) error {
		var wg sync.WaitGroup
		sem := make(chan struct{}, o.setupConc)
		var firstErr atomic.Pointer[error]
		for k := 0; k < n; k++ {
			if firstErr.Load() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func(k int) {
				defer func() { <-sem; wg.Done() }()
				if err := f(k); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}(k)
		}
		wg.Wait()
		if e := firstErr.Load(); e != nil {
			return *e
		}
		return nil
	}
	var mu sync.Mutex
	for i := range accounts {
		accounts[i] = make([]*scaleSession, o.perAcct)
	}
	if err := parallel(o.accounts, func(i int) error {
		s, err := open(i, 0, true)
		mu.Lock()
		accounts[i][0] = s
		mu.Unlock()
		return err
	}); err != nil {
		return fmt.Errorf("setup (first sessions): %w", err)
	}
	rest := o.perAcct - 1
	if err := parallel(o.accounts*rest, func(k int) error {
		i, j := k/rest, k%rest+1
		s, err := open(i, j, false)
		mu.Lock()
		accounts[i][j] = s
		mu.Unlock()
		return err
	}); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	// Lines that arrived during the setup (STATUS of the first session's
	// CREATEs, ...) are not part of any measurement.
	for _, ss := range accounts {
		for _, s := range ss {
			s.conn.drain()
		}
	}
	out.Encode(clientMsg{Event: "ready", Sessions: o.accounts * o.perAcct, SetupS: time.Since(t0).Seconds(), Retries: retries.Load()})

	actors := map[int]*imapConn{}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "trickle":
			n, _ := strconv.Atoi(f[1])
			rate, _ := strconv.ParseFloat(f[2], 64)
			res, err := trickle(o, accounts, actors, n, rate)
			if err != nil {
				return err
			}
			out.Encode(res)
		case "quit":
			for _, ss := range accounts {
				for _, s := range ss {
					s.conn.close()
				}
			}
			for _, a := range actors {
				a.close()
			}
			return nil
		}
	}
	return in.Err()
}

// trickle makes n changes at rate per second, each an APPEND of a small
// message to a random mailbox of a random account by a session of that
// account that is not one of its IDLE sessions, and measures when every
// IDLE session of the account that must hear of it has read its line:
// `* n EXISTS` on the sessions that have the mailbox selected, and (with
// o.status) `* STATUS "box" (...)` on the others.
func trickle(o options, accounts [][]*scaleSession, actors map[int]*imapConn, n int, rate float64) (clientMsg, error) {
	rng := rand.New(rand.NewSource(1))
	res := clientMsg{Event: "trickle", Changes: n}
	var dropped0 int64
	for _, ss := range accounts {
		for _, s := range ss {
			dropped0 += s.conn.dropped.Load()
		}
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for k := 0; k < n; k++ {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		i := rng.Intn(len(accounts))
		mbox := scaleMailboxes[rng.Intn(len(scaleMailboxes))]
		actor := actors[i]
		if actor == nil {
			var err error
			actor, err = actorSession("actor "+scaleAccount(i), o.addr, scaleAccount(i), benchPass)
			if err != nil {
				return res, err
			}
			actors[i] = actor
		}
		type exp struct {
			s  *scaleSession
			re *regexp.Regexp
		}
		var want []exp
		for _, s := range accounts[i] {
			s.conn.drain()
			switch {
			case s.mailbox == mbox:
				want = append(want, exp{s, reExists})
			case o.status:
				want = append(want, exp{s, reStatus(mbox)})
			}
		}
		var r result
		for try := 0; ; try++ {
			var err error
			r, err = actor.appendMsg(mbox, message(fmt.Sprintf("trickle-%d", k)))
			if err != nil {
				return res, err
			}
			if r.ok() {
				break
			}
			if !strings.Contains(r.tagged.text, "locked") || try >= 20 {
				return res, fmt.Errorf("APPEND: %s", r.tagged.text)
			}
			res.AppendRetry++
			time.Sleep(time.Millisecond)
		}
		deadline := time.Now().Add(sampleTimeout)
		var last time.Time
		complete := true
		for _, e := range want {
			var at time.Time
			for at.IsZero() {
				l, err := e.s.conn.next(time.Until(deadline))
				if err != nil {
					complete = false
					if res.MissingFirst == "" {
						res.MissingFirst = fmt.Sprintf("change %d (%s of %s): %v", k, mbox, scaleAccount(i), err)
					}
					break
				}
				if e.re.MatchString(l.text) {
					at = l.at
				}
			}
			if at.IsZero() {
				continue
			}
			res.EachFromOK = append(res.EachFromOK, int64(at.Sub(r.tagged.at)))
			if at.After(last) {
				last = at
			}
		}
		if !complete {
			res.Timeouts++
			continue
		}
		res.AllFromOK = append(res.AllFromOK, int64(last.Sub(r.tagged.at)))
		res.AllFromSend = append(res.AllFromSend, int64(last.Sub(r.sent)))
	}
	res.DurationS = time.Since(start).Seconds()
	for _, ss := range accounts {
		for _, s := range ss {
			res.Dropped += s.conn.dropped.Load()
		}
	}
	res.Dropped -= dropped0
	return res, nil
}

// scaleResult is one run of scenario 3 (stock or notify).
type scaleResult struct {
	kind                   string
	setupS                 float64
	setupRetries           int64
	sessions               int
	empty, loaded          memSnap
	idleCPU                time.Duration
	idleWindow             time.Duration
	clientCPU              time.Duration
	notifySessions, idling float64
	trickle                clientMsg
	allFromOK, allFromSend samples
	eachFromOK             samples
}

type memSnap struct {
	rss, heapInuse, stackInuse, heapAlloc, goroutines float64
}

func (b *bench) memSnap(p *maddyProc) (memSnap, error) {
	if err := p.forceGC(); err != nil {
		return memSnap{}, err
	}
	m, err := p.metrics()
	if err != nil {
		return memSnap{}, err
	}
	rss, err := procRSS(p.pid())
	if err != nil {
		return memSnap{}, err
	}
	return memSnap{rss: float64(rss), heapInuse: m["go_memstats_heap_inuse_bytes"], stackInuse: m["go_memstats_stack_inuse_bytes"],
		heapAlloc: m["go_memstats_heap_alloc_bytes"], goroutines: m["go_goroutines"]}, nil
}

func (b *bench) scaleRun(kind string) (*scaleResult, error) {
	bin, conf := b.stockBin, stockConfig("sqlite3", "imapsql.db")
	if kind == "notify" {
		bin, conf = b.notifyBin, notifyConfig("sqlite3", "imapsql.db", "none")
	}
	srv, err := b.startMaddy(bin, "s3-"+kind, conf)
	if err != nil {
		return nil, err
	}
	defer b.stopMaddy(srv)
	res := &scaleResult{kind: kind}
	time.Sleep(time.Second)
	if res.empty, err = b.memSnap(srv); err != nil {
		return nil, err
	}

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-scale-client", "-addr", srv.addr("imap"),
		"-accounts", strconv.Itoa(b.o.accounts), "-sessions-per-account", strconv.Itoa(b.o.perAcct),
		"-setup-concurrency", strconv.Itoa(b.o.setupConc), "-status="+strconv.FormatBool(kind == "notify"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	dec := json.NewDecoder(stdout)
	var ready clientMsg
	b.logf("scenario 3 (%s): opening %d IDLE sessions", kind, b.o.accounts*b.o.perAcct)
	if err := dec.Decode(&ready); err != nil {
		return nil, fmt.Errorf("scale client (setup failed? see above): %w", err)
	}
	res.setupS, res.setupRetries, res.sessions = ready.SetupS, ready.Retries, ready.Sessions
	b.logf("scenario 3 (%s): %d sessions in %.1f s", kind, ready.Sessions, ready.SetupS)

	// Idle CPU: let the setup's aftermath settle, then measure.
	time.Sleep(3 * time.Second)
	c0, err := procCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	cc0, _ := procCPU(cmd.Process.Pid)
	w0 := time.Now()
	time.Sleep(b.o.idleCPU)
	c1, _ := procCPU(srv.pid())
	cc1, _ := procCPU(cmd.Process.Pid)
	res.idleWindow = time.Since(w0)
	res.idleCPU, res.clientCPU = c1-c0, cc1-cc0
	if b.o.profile && b.o.raw != "" {
		path := filepath.Join(b.o.raw, "s3-"+kind+"-idle.cpu.pprof")
		if err := srv.cpuProfile(path, 10*time.Second); err != nil {
			b.logf("profile: %v", err)
		}
	}
	if res.loaded, err = b.memSnap(srv); err != nil {
		return nil, err
	}
	if b.o.profile && b.o.raw != "" {
		// Right after memSnap's forced GC: the live heap of the loaded
		// process.
		if h, err := httpGet("http://" + srv.addr("pprof") + "/debug/pprof/heap"); err == nil {
			os.WriteFile(filepath.Join(b.o.raw, "s3-"+kind+"-loaded.heap.pprof"), h, 0o644)
		}
		if g, err := httpGet("http://" + srv.addr("pprof") + "/debug/pprof/goroutine?debug=1"); err == nil {
			os.WriteFile(filepath.Join(b.o.raw, "s3-"+kind+"-loaded.goroutines.txt"), g, 0o644)
		}
	}
	if kind == "notify" {
		m, err := srv.metrics()
		if err == nil {
			res.notifySessions, res.idling = m["maddy_notify_sessions"], m["maddy_notify_sessions_idling"]
		}
	}

	b.logf("scenario 3 (%s): trickle of %d changes at %.0f/s", kind, b.o.trickle, b.o.rate)
	var profDone chan error
	if b.o.profile && b.o.raw != "" && kind == "notify" {
		profDone = make(chan error, 1)
		d := time.Duration(float64(b.o.trickle)/b.o.rate*float64(time.Second)) - time.Second
		if d < time.Second {
			d = time.Second
		}
		go func() { profDone <- srv.cpuProfile(filepath.Join(b.o.raw, "s3-notify-trickle.cpu.pprof"), d) }()
	}
	fmt.Fprintf(stdin, "trickle %d %g\n", b.o.trickle, b.o.rate)
	if err := dec.Decode(&res.trickle); err != nil {
		return nil, fmt.Errorf("scale client trickle: %w", err)
	}
	if profDone != nil {
		if err := <-profDone; err != nil {
			b.logf("profile: %v", err)
		}
	}
	for _, v := range res.trickle.AllFromOK {
		res.allFromOK = append(res.allFromOK, time.Duration(v))
	}
	for _, v := range res.trickle.AllFromSend {
		res.allFromSend = append(res.allFromSend, time.Duration(v))
	}
	for _, v := range res.trickle.EachFromOK {
		res.eachFromOK = append(res.eachFromOK, time.Duration(v))
	}
	io.WriteString(stdin, "quit\n")
	return res, nil
}

func mib(v float64) string { return fmt.Sprintf("%.1f", v/(1<<20)) }

// scenario3: many IDLE sessions against one maddy.
func (b *bench) scenario3() error {
	rep := b.rep
	rep.section("3. Scale")
	var runs []*scaleResult
	for _, kind := range []string{"stock", "notify"} {
		r, err := b.scaleRun(kind)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		runs = append(runs, r)
	}
	st, nt := runs[0], runs[1]
	sessions := float64(nt.sessions)

	rep.p("One maddy process (SQLite), %d accounts × %d IDLE sessions = %d sessions (per account 6 of 10 on INBOX, 2 on "+
		"Archive, 2 on Sent), opened by a separate client process (this harness started again with -scale-client, %d "+
		"logins at a time; `auth dummy`, so imapsql creates each account at its first login). Stock maddy first, then maddy "+
		"with storage.notify, each in a fresh process and state folder. Open-files limit: the harness raises its soft limit "+
		"to the hard limit (%d) before it starts maddy and the client, which inherit it.",
		b.o.accounts, b.o.perAcct, nt.sessions, b.o.setupConc, func() uint64 { _, m := nofile(); return m }())
	rep.p("")
	rep.p("| | stock maddy | maddy + storage.notify |")
	rep.p("| --- | ---: | ---: |")
	rep.p("| sessions opened | %d | %d |", st.sessions, nt.sessions)
	rep.p("| setup time, s (logins repeated) | %.1f (%d) | %.1f (%d) |", st.setupS, st.setupRetries, nt.setupS, nt.setupRetries)
	rep.p("| maddy CPU while nothing changes, %% of one core (%.0f s window) | %.2f | %.2f |", nt.idleWindow.Seconds(),
		100*st.idleCPU.Seconds()/st.idleWindow.Seconds(), 100*nt.idleCPU.Seconds()/nt.idleWindow.Seconds())
	rep.p("| client process CPU in the same window, %% of one core | %.2f | %.2f |",
		100*st.clientCPU.Seconds()/st.idleWindow.Seconds(), 100*nt.clientCPU.Seconds()/nt.idleWindow.Seconds())
	rep.p("| goroutines, empty → loaded | %.0f → %.0f | %.0f → %.0f |", st.empty.goroutines, st.loaded.goroutines, nt.empty.goroutines, nt.loaded.goroutines)
	rep.p("| heap in use (after a forced GC), MiB, empty → loaded | %s → %s | %s → %s |", mib(st.empty.heapInuse), mib(st.loaded.heapInuse), mib(nt.empty.heapInuse), mib(nt.loaded.heapInuse))
	rep.p("| goroutine stacks in use, MiB, empty → loaded | %s → %s | %s → %s |", mib(st.empty.stackInuse), mib(st.loaded.stackInuse), mib(nt.empty.stackInuse), mib(nt.loaded.stackInuse))
	rep.p("| RSS (VmRSS), MiB, empty → loaded | %s → %s | %s → %s |", mib(st.empty.rss), mib(st.loaded.rss), mib(nt.empty.rss), mib(nt.loaded.rss))
	if nt.notifySessions > 0 {
		rep.p("| `maddy_notify_sessions` / `_idling` | — | %.0f / %.0f |", nt.notifySessions, nt.idling)
	}
	rep.p("")

	per := func(get func(memSnap) float64) (plain, delta float64) {
		plain = (get(nt.loaded) - get(st.loaded)) / sessions
		delta = ((get(nt.loaded) - get(nt.empty)) - (get(st.loaded) - get(st.empty))) / sessions
		return
	}
	hp, hd := per(func(m memSnap) float64 { return m.heapInuse })
	sp, sd := per(func(m memSnap) float64 { return m.stackInuse })
	rp, rd := per(func(m memSnap) float64 { return m.rss })
	gp, gd := per(func(m memSnap) float64 { return m.goroutines })
	rep.p("The module's memory per session, (with the module − without it) / %d sessions, in bytes; \"growth\" subtracts each "+
		"process's own empty figure first (start-up differences cancel):", nt.sessions)
	rep.p("")
	rep.p("| | loaded − loaded | growth − growth |")
	rep.p("| --- | ---: | ---: |")
	rep.p("| heap in use | %.0f | %.0f |", hp, hd)
	rep.p("| goroutine stacks | %.0f | %.0f |", sp, sd)
	rep.p("| heap + stacks | %.0f | %.0f |", hp+sp, hd+sd)
	rep.p("| RSS | %.0f | %.0f |", rp, rd)
	rep.p("| goroutines per session | %.2f | %.2f |", gp, gd)
	rep.p("")

	rep.p("Then a trickle: %d changes at %.0f per second, each an APPEND of a small message to a random mailbox (INBOX, "+
		"Archive or Sent) of a random account, by an extra session of that account (one per account, opened at its first "+
		"change), one change at a time. Measured per change: until every IDLE session of the account that must hear of it "+
		"has read its line — on stock maddy the sessions with that mailbox selected (`* n EXISTS`), with the module all %d "+
		"(EXISTS, or `* STATUS` for the others).", b.o.trickle, b.o.rate, b.o.perAcct)
	rep.p("")
	rep.p("| delivery to all sessions of the account, ms | changes | p50 | p90 | p99 | max | from the command sent: p50 | p99 | timeouts | lines dropped by the client |")
	rep.p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range runs {
		a, s := r.allFromOK.summary(), r.allFromSend.summary()
		rep.p("| %s | %d | %s | %s | %s | %s | %s | %s | %d | %d |", r.kind, a.N, ms(a.P50), ms(a.P90), ms(a.P99), ms(a.Max),
			ms(s.P50), ms(s.P99), r.trickle.Timeouts, r.trickle.Dropped)
	}
	rep.p("")
	rep.p("| per session (each line), ms from the tagged OK | lines | p50 | p90 | p99 | max |")
	rep.p("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range runs {
		e := r.eachFromOK.summary()
		rep.p("| %s | %d | %s | %s | %s | %s |", r.kind, e.N, ms(e.P50), ms(e.P90), ms(e.P99), ms(e.Max))
	}
	rep.p("")
	for _, r := range runs {
		if r.trickle.MissingFirst != "" {
			rep.p("- %s: first missing line: %s", r.kind, r.trickle.MissingFirst)
		}
		if r.trickle.AppendRetry > 0 {
			rep.p("- %s: %d APPENDs repeated after SQLite's \"database is locked\"", r.kind, r.trickle.AppendRetry)
		}
	}
	rep.p("")
	a := nt.allFromOK.summary()
	rep.target("3", fmt.Sprintf("delivery to all sessions of the changed account, p99 ≤ 50 ms (%d sessions)", nt.sessions),
		fmt.Sprintf("%s ms (p50 %s ms; %d timeouts)", ms(a.P99), ms(a.P50), nt.trickle.Timeouts),
		a.P99 <= 50*time.Millisecond && nt.trickle.Timeouts == 0 && a.N > 0)
	cpu := 100 * nt.idleCPU.Seconds() / nt.idleWindow.Seconds()
	rep.target("3", "maddy's CPU while nothing changes < 1% of a core",
		fmt.Sprintf("%.2f%% (stock %.2f%%)", cpu, 100*st.idleCPU.Seconds()/st.idleWindow.Seconds()), cpu < 1)
	rep.target("3", "module memory per session ≤ 4 KiB (heap + goroutine stacks, growth − growth)",
		fmt.Sprintf("%.0f B (heap %.0f + stacks %.0f; RSS %.0f B)", hd+sd, hd, sd, rd), hd+sd <= 4096)
	return nil
}
