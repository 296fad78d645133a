// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/lib/pq"
)

const benchPass = "any" // auth dummy accepts any password

// sampleTimeout bounds the wait for a maddy sample's lines; Dovecot's
// take about 500 ms.
const (
	sampleTimeout        = 5 * time.Second
	dovecotSampleTimeout = 5 * time.Second
)

// moduleNotify is what scenario 2's NOTIFY client asks for.
const moduleNotify = "NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))"

func appendAction(mbox string) func(int) string {
	return func(i int) string { return appendCmd(mbox, message(fmt.Sprintf("bench-%d", i))) }
}

// createDeleteAction creates BoxN in even samples and deletes it in the
// next one (`* LIST (\NonExistent) ...`), so that the account keeps a
// handful of mailboxes however many samples run (CREATE in go-imap-sql on
// SQLite gets slower as mailboxes accumulate).
func createDeleteAction(i int) string {
	if i%2 == 0 {
		return "CREATE " + quote(fmt.Sprintf("Box%d", i))
	}
	return "DELETE " + quote(fmt.Sprintf("Box%d", i-1))
}

// newProbe connects the actor and the IDLE session (on mailbox) of user at
// addr and returns a probe with one watch.
func newProbe(name, addr, user, pass string, create []string, idleBox string, idleExtra []string,
	action func(int) string, want *regexp.Regexp, settle ...*regexp.Regexp) (*probe, error) {
	actor, err := actorSession(name+" actor", addr, user, pass, create...)
	if err != nil {
		return nil, err
	}
	idle, err := idleSession(name+" idle", addr, user, pass, idleBox, idleExtra...)
	if err != nil {
		return nil, err
	}
	if len(settle) == 0 {
		settle = []*regexp.Regexp{want}
	}
	return &probe{name: name, actor: actor, action: action, timeout: sampleTimeout,
		watches: []*watch{{label: name, conn: idle, want: want, settle: settle}}}, nil
}

// latencyTable writes one row per watch of the probes: both measures.
func latencyTable(rep *report, probes ...*probe) {
	rep.p("| series | samples | from the tagged OK: p50 | p90 | p99 | max | from the command sent: p50 | p90 | p99 | max | the command itself (sent → OK): p50 | p99 |")
	rep.p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, p := range probes {
		c := p.cmdTime.summary()
		for _, w := range p.watches {
			a, b := w.fromOK.summary(), w.fromSend.summary()
			rep.p("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", w.label, a.N,
				ms(a.P50), ms(a.P90), ms(a.P99), ms(a.Max), ms(b.P50), ms(b.P90), ms(b.P99), ms(b.Max), ms(c.P50), ms(c.P99))
		}
	}
	rep.p("")
	var notes []string
	for _, p := range probes {
		if len(p.failures) > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d failed samples (first: %s)", p.name, len(p.failures), p.failures[0]))
		}
		if p.retries > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d commands repeated after SQLite's \"database is locked\"", p.name, p.retries))
		}
		for _, w := range p.watches {
			if w.stray > 0 {
				notes = append(notes, fmt.Sprintf("%s: %d unexpected lines between samples", w.label, w.stray))
			}
		}
	}
	if len(notes) == 0 {
		rep.p("Every sample completed; no command was repeated; no unexpected line arrived between samples.")
	} else {
		for _, n := range notes {
			rep.p("- %s", n)
		}
	}
	rep.p("")
}

// scenario1: APPEND → EXISTS on stock maddy and on maddy with the module
// (plain_clients selected, the default, and draft), all in the same run:
// first the harness's measure (warm-up, each sample waits for every line
// of the change; the actor has nothing selected and the account no other
// session), then the user's setup (no warm-up, a sample ends with the
// EXISTS line and the tagged OK, so the module's FETCH may still be on its
// way when the next sample starts; the actor has INBOX selected, and the
// account has three more IDLE sessions, two on INBOX and one on Archive).
func (b *bench) scenario1() error {
	rep := b.rep
	rep.section("1. EXISTS path unchanged")
	stock, err := b.startMaddy(b.stockBin, "s1-stock", stockConfig("sqlite3", "imapsql.db"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(stock)
	sel, err := b.startMaddy(b.notifyBin, "s1-selected", notifyConfigPlain("sqlite3", "imapsql.db", "none", "selected"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(sel)
	draft, err := b.startMaddy(b.notifyBin, "s1-draft", notifyConfigPlain("sqlite3", "imapsql.db", "none", "draft"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(draft)

	type server struct {
		label string
		proc  *maddyProc
		lines []*regexp.Regexp // every line of one change
	}
	servers := []server{
		{"stock maddy", stock, []*regexp.Regexp{reExists, reRecent}},
		{"notify, plain_clients selected", sel, []*regexp.Regexp{reExists, reRecent, reFetch}},
		{"notify, plain_clients draft", draft, []*regexp.Regexp{reExists, reRecent, reFetch}},
	}
	mk := func(user string, whole bool) ([]*probe, error) {
		var out []*probe
		for _, sv := range servers {
			settle := sv.lines
			var create []string
			if !whole {
				settle = []*regexp.Regexp{reExists}
				create = []string{"Archive"} // before the IDLE session: no LIST of it
			}
			p, err := newProbe(sv.label+": EXISTS", sv.proc.addr("imap"), user, benchPass, create, "INBOX", nil,
				appendAction("INBOX"), reExists, settle...)
			if err != nil {
				return nil, err
			}
			if !whole {
				p.watches[0].late = sv.lines
				// A client's usual state: the acting session has INBOX
				// selected too (its APPEND then ends with the mailbox's
				// Poll, and the module's FETCH of its own new message).
				if _, err := p.actor.mustOK("SELECT INBOX"); err != nil {
					return nil, err
				}
				// The account's other devices: two more IDLE sessions on
				// INBOX and one on Archive, which nobody reads (the
				// harness's reader drops what does not fit its buffer).
				for i, box := range []string{"INBOX", "INBOX", "Archive"} {
					if _, err := idleSession(fmt.Sprintf("%s other %d", sv.label, i), sv.proc.addr("imap"), user, benchPass, box); err != nil {
						return nil, err
					}
				}
			}
			out = append(out, p)
		}
		return out, nil
	}
	harness, err := mk("s1@maddy.test", true)
	if err != nil {
		return err
	}
	user, err := mk("s1u@maddy.test", false)
	if err != nil {
		return err
	}
	b.logf("scenario 1: %d samples each, interleaved (harness's measure)", b.o.n1)
	var profDone chan error
	if b.o.profile && b.o.raw != "" {
		// The first seconds of the harness's pass, of each process (use
		// a large -n1 so that the pass lasts longer than the profile).
		profDone = make(chan error, len(servers))
		for _, sv := range servers {
			path := filepath.Join(b.o.raw, "s1-"+filepath.Base(sv.proc.name)+".cpu.pprof")
			go func(p *maddyProc) { profDone <- p.cpuProfile(path, 10*time.Second) }(sv.proc)
		}
	}
	if err := runInterleaved(b.o.n1, b.o.warm, harness, nil, 0, b.progress("scenario 1")); err != nil {
		return err
	}
	if profDone != nil {
		for range servers {
			if err := <-profDone; err != nil {
				b.logf("profile: %v", err)
			}
		}
	}
	b.logf("scenario 1: %d samples each, interleaved (user's measure)", b.o.n1)
	if err := runInterleaved(b.o.n1, 0, user, nil, 0, b.progress("scenario 1, user's measure")); err != nil {
		return err
	}
	b.saveRaw("s1", harness...)
	b.saveRaw("s1-user", user...)

	rep.p("An IDLE session on INBOX, another session of the same account APPENDs a small message (%d bytes, LITERAL+) to INBOX; "+
		"the time until the IDLE session reads `* n EXISTS`. Stock maddy %s and maddy with storage.notify twice, "+
		"`plain_clients selected` (the default) and `plain_clients draft` (both add `* n FETCH (UID ...)` after the store's "+
		"EXISTS and RECENT), each its own process on SQLite, all interleaved sample by sample (the order rotates).",
		len(message("bench-0")), maddyVersion)
	rep.p("")
	rep.p("Two measures, one after the other on the same processes (each with its own account): the harness's "+
		"(%d samples per series after %d warm-up samples; a sample ends when every line of the change has arrived: "+
		"EXISTS, RECENT and the module's FETCH; the acting session has no mailbox selected and the account no other session) "+
		"and the user's setup (%d samples, no warm-up; a sample ends with EXISTS and the APPEND's tagged OK, so the module's "+
		"FETCH of one sample may still be on its way while the next runs; the acting session has INBOX selected, as a client "+
		"usually has, so its APPEND ends with the module's FETCH of its own message; the account has three more IDLE sessions "+
		"that nobody reads, two on INBOX and one on Archive).",
		b.o.n1, b.o.warm, b.o.n1)
	rep.p("")
	rep.p("Latency in milliseconds. \"From the tagged OK\" is negative when the IDLE session read the line before the acting session read its OK.")
	rep.p("")
	rep.p("Harness's measure:")
	rep.p("")
	latencyTable(rep, harness...)
	rep.p("User's setup:")
	rep.p("")
	latencyTable(rep, user...)

	rep.p("| ratio notify / stock | p50 | p90 | p99 |")
	rep.p("| --- | ---: | ---: | ---: |")
	type row struct {
		name   string
		n, s   summary
		target bool
	}
	var rows []row
	for _, set := range []struct {
		name   string
		probes []*probe
	}{{"harness's measure", harness}, {"user's setup", user}} {
		st := set.probes[0].watches[0]
		for _, p := range set.probes[1:] {
			w := p.watches[0]
			cfg := strings.TrimSuffix(strings.TrimPrefix(p.name, "notify, "), ": EXISTS")
			rows = append(rows, row{set.name + ", " + cfg + ", from the command sent", w.fromSend.summary(), st.fromSend.summary(), true})
			rows = append(rows, row{set.name + ", " + cfg + ", from the tagged OK", w.fromOK.summary(), st.fromOK.summary(), false})
		}
	}
	for _, r := range rows {
		rep.p("| %s | %s | %s | %s |", r.name, fmtRatio(r.n.P50, r.s.P50), fmtRatio(r.n.P90, r.s.P90), fmtRatio(r.n.P99, r.s.P99))
	}
	rep.p("")
	rep.p("Ratios are n/a where stock's figure is under 10 µs (or negative): the line arrives with the OK and the quotient is noise. " +
		"The target is judged on the measure from the command sent, whose stock figures are well above the clock's resolution.")
	rep.p("")
	for _, r := range rows {
		if !r.target {
			continue
		}
		r50, ok50 := ratio(r.n.P50, r.s.P50)
		r99, ok99 := ratio(r.n.P99, r.s.P99)
		rep.target("1", "EXISTS ratio notify/stock at p50 ≤ 1.10 ("+r.name+")",
			fmt.Sprintf("%.3f (%s / %s ms)", r50, ms(r.n.P50), ms(r.s.P50)), ok50 && r50 <= 1.10)
		rep.target("1", "EXISTS ratio notify/stock at p99 ≤ 1.25 ("+r.name+")",
			fmt.Sprintf("%.3f (%s / %s ms)", r99, ms(r.n.P99), ms(r.s.P99)), ok99 && r99 <= 1.25)
	}
	return nil
}

// scenario2: the module's own notifications, against stock EXISTS and,
// when installed, Dovecot with NOTIFY.
func (b *bench) scenario2() error {
	rep := b.rep
	rep.section("2. New notifications")
	stock, err := b.startMaddy(b.stockBin, "s2-stock", stockConfig("sqlite3", "imapsql.db"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(stock)
	notify, err := b.startMaddy(b.notifyBin, "s2-notify", notifyConfig("sqlite3", "imapsql.db", "none"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(notify)

	const user = "s2@maddy.test"
	base, err := newProbe("stock maddy: EXISTS (APPEND INBOX)", stock.addr("imap"), user, benchPass, nil, "INBOX", nil,
		appendAction("INBOX"), reExists, reExists, reRecent)
	if err != nil {
		return err
	}
	st, err := newProbe("notify: STATUS (APPEND Archive)", notify.addr("imap"), "s2s@maddy.test", benchPass, []string{"Archive"}, "INBOX", nil,
		appendAction("Archive"), reStatus("Archive"))
	if err != nil {
		return err
	}
	// Each kind has its own account, so that every IDLE session gets
	// only the lines of its own probe.
	li, err := newProbe("notify: LIST (CREATE / DELETE)", notify.addr("imap"), "s2l@maddy.test", benchPass, nil, "INBOX", nil,
		createDeleteAction, listProbeRe)
	if err != nil {
		return err
	}
	fe, err := newProbe("notify: FETCH UID BODYSTRUCTURE (APPEND INBOX)", notify.addr("imap"), "s2f@maddy.test", benchPass, nil, "INBOX", nil,
		appendAction("INBOX"), reFetch, reExists, reRecent, reFetch)
	if err != nil {
		return err
	}
	// A client that asked with NOTIFY (RFC 5465): the same STATUS as a
	// plain_clients draft client's, written by the session's writer.
	nt, err := newProbe("notify: NOTIFY STATUS (APPEND Archive)", notify.addr("imap"), "s2n@maddy.test", benchPass, []string{"Archive"}, "INBOX",
		[]string{moduleNotify}, appendAction("Archive"), reStatus("Archive"))
	if err != nil {
		return err
	}
	probes := []*probe{base, st, li, fe, nt}

	var dv []*probe
	var dvNote string
	if b.o.dovecotN > 0 {
		d, err := startDovecot(b.base)
		if err != nil {
			dvNote = "skipped: " + err.Error()
		} else {
			defer d.stop()
			b.dovecot = d
			mk := func(name, user string, create []string, action func(int) string, want *regexp.Regexp, settle ...*regexp.Regexp) error {
				p, err := newProbe(name, d.addr, user, dovecotPass, create, "INBOX", []string{dovecotNotify}, action, want, settle...)
				if err != nil {
					return err
				}
				p.timeout = dovecotSampleTimeout
				dv = append(dv, p)
				return nil
			}
			if err := mk("Dovecot: STATUS (APPEND Archive)", "status", []string{"Archive"}, appendAction("Archive"), reStatus("Archive")); err != nil {
				return err
			}
			if err := mk("Dovecot: LIST (CREATE / DELETE)", "list", nil, createDeleteAction, listProbeRe); err != nil {
				return err
			}
			if err := mk("Dovecot: FETCH UID BODYSTRUCTURE (APPEND INBOX)", "fetch", nil, appendAction("INBOX"), reFetch, reExists, reRecent, reFetch); err != nil {
				return err
			}
		}
	} else {
		dvNote = "skipped: -dovecot-samples 0"
	}
	b.logf("scenario 2: %d samples each, %d of each Dovecot kind", b.o.n2, b.o.dovecotN)
	if err := runInterleaved(b.o.n2, b.o.warm, probes, dv, b.o.dovecotN, b.progress("scenario 2")); err != nil {
		return err
	}
	b.saveRaw("s2", append(probes, dv...)...)

	rep.p("An IDLE session on INBOX; another session of the same account changes something; the time until the IDLE session "+
		"reads the notification: APPEND to Archive → `* STATUS \"Archive\" (...)`, CREATE and DELETE (taking turns) → `* LIST (...) \".\" \"BoxN\"`, "+
		"APPEND to INBOX → `* n FETCH (UID u FLAGS (\\Recent) BODYSTRUCTURE (...))` (after the store's EXISTS and RECENT). "+
		"The baseline is stock maddy's EXISTS (APPEND to INBOX) in its own process. %d samples of each maddy series after %d "+
		"warm-up samples, interleaved sample by sample (one sample of each series per iteration, rotating which goes first).",
		b.o.n2, b.o.warm)
	rep.p("")
	if len(dv) > 0 {
		rep.p("Dovecot %s, a private instance on loopback (maildir in a temporary folder, `mailbox_list_index = yes`, "+
			"static passdb), the IDLE session after `%s`: %d samples of each kind after one warm-up sample, "+
			"spread evenly through the same run (one Dovecot sample every few iterations; each takes about half a second).",
			b.dovecot.version, dovecotNotify, b.o.dovecotN)
	} else {
		rep.p("Dovecot: %s.", dvNote)
	}
	rep.p("")
	latencyTable(rep, append(probes, dv...)...)

	bs := base.watches[0].fromSend.summary()
	bo := base.watches[0].fromOK.summary()
	rep.p("| series | p50 ratio to stock EXISTS (from the command sent) | p50 − stock EXISTS p50 (from the tagged OK), ms |")
	rep.p("| --- | ---: | ---: |")
	for _, p := range probes[1:] {
		s, o := p.watches[0].fromSend.summary(), p.watches[0].fromOK.summary()
		rep.p("| %s | %s | %s |", p.name, fmtRatio(s.P50, bs.P50), ms(o.P50-bo.P50))
	}
	rep.p("")
	for _, p := range probes[1:] {
		s := p.watches[0].fromSend.summary()
		o := p.watches[0].fromOK.summary()
		kind := strings.SplitN(strings.TrimPrefix(p.name, "notify: "), " ", 2)[0]
		r, ok := ratio(s.P50, bs.P50)
		rep.target("2", kind+": p50 within 1.2× of stock EXISTS p50 (from the command sent)",
			fmt.Sprintf("%.3f (%s / %s ms; the command itself: %s ms, stock's APPEND %s ms; from the tagged OK %s vs %s ms)",
				r, ms(s.P50), ms(bs.P50), ms(p.cmdTime.summary().P50), ms(base.cmdTime.summary().P50), ms(o.P50), ms(bo.P50)),
			ok && r <= 1.2)
		rep.target("2", kind+": p99 ≤ 10 ms", fmt.Sprintf("%s ms from the tagged OK, %s ms from the command sent", ms(o.P99), ms(s.P99)),
			o.P99 <= 10*time.Millisecond)
	}
	if len(dv) > 0 {
		rep.p("| kind | maddy + notify p50 / Dovecot p50 (from the tagged OK) | (from the command sent) |")
		rep.p("| --- | ---: | ---: |")
		// NOTIFY's STATUS is compared with Dovecot's STATUS (also NOTIFY).
		for i, p := range probes[1:] {
			if i >= len(dv) {
				i = 0 // the NOTIFY STATUS: beside Dovecot's STATUS
			}
			d := dv[i]
			mo, ms_ := p.watches[0].fromOK.summary(), p.watches[0].fromSend.summary()
			do, ds := d.watches[0].fromOK.summary(), d.watches[0].fromSend.summary()
			rep.p("| %s | %s | %s |", strings.TrimPrefix(p.name, "notify: "), fmtRatio(mo.P50, do.P50), fmtRatio(ms_.P50, ds.P50))
			r, ok := ratio(mo.P50, do.P50)
			kind := strings.SplitN(strings.TrimPrefix(p.name, "notify: "), " ", 2)[0]
			rep.target("2", kind+": ratio to Dovecot (p50, from the tagged OK) ≤ 0.01",
				fmt.Sprintf("%.4f (%s / %s ms)", r, ms(mo.P50), ms(do.P50)), ok && r <= 0.01)
		}
		rep.p("")
	} else {
		rep.target("2", "ratio to Dovecot ≤ 0.01", dvNote, nil)
	}
	b.s2StatusP50 = st.watches[0].fromOK.summary().P50
	b.s2StatusSendP50 = st.watches[0].fromSend.summary().P50
	return nil
}

// scenario6: APPEND on instance A → STATUS on an IDLE session of instance B
// (PostgreSQL, broker postgres), with scenario 2's STATUS in the same run.
func (b *bench) scenario6() error {
	rep := b.rep
	rep.section("6. Across instances")
	dsn, drop, err := createDatabase(b.o.pg)
	if err != nil {
		rep.p("Skipped: %v", err)
		rep.p("")
		rep.target("6", "cross-instance STATUS p50 ≤ scenario 2 + 5 ms", "skipped: "+err.Error(), nil)
		return nil
	}
	defer func() {
		if err := drop(); err != nil {
			b.logf("drop database: %v", err)
		}
	}()
	single, err := b.startMaddy(b.notifyBin, "s6-single", notifyConfig("sqlite3", "imapsql.db", "none"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(single)
	// go-imap-sql creates its schema at start: A first, then B.
	a, err := b.startMaddy(b.notifyBin, "s6-A", notifyConfig("postgres", dsn, "postgres"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(a)
	bb, err := b.startMaddy(b.notifyBin, "s6-B", notifyConfig("postgres", dsn, "postgres"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(bb)

	const user = "s6@maddy.test"
	base, err := newProbe("single instance (SQLite): STATUS", single.addr("imap"), user, benchPass, []string{"Archive"}, "INBOX", nil,
		appendAction("Archive"), reStatus("Archive"))
	if err != nil {
		return err
	}
	actor, err := actorSession("A actor", a.addr("imap"), user, benchPass, "Archive")
	if err != nil {
		return err
	}
	idleA, err := idleSession("A idle", a.addr("imap"), user, benchPass, "INBOX")
	if err != nil {
		return err
	}
	idleB, err := idleSession("B idle", bb.addr("imap"), user, benchPass, "INBOX")
	if err != nil {
		return err
	}
	cl := &probe{name: "cluster: APPEND Archive on A", actor: actor, action: appendAction("Archive"), timeout: sampleTimeout,
		watches: []*watch{
			{label: "PostgreSQL, same instance (A → A): STATUS", conn: idleA, want: reStatus("Archive"), settle: []*regexp.Regexp{reStatus("Archive")}},
			{label: "PostgreSQL, across instances (A → B): STATUS", conn: idleB, want: reStatus("Archive"), settle: []*regexp.Regexp{reStatus("Archive")}},
		}}
	// The brokers connect asynchronously: wait until B hears of A's changes.
	if err := cl.sample(-1, false); err != nil {
		return fmt.Errorf("first cross-instance STATUS: %w", err)
	}
	cl.failures = nil
	b.logf("scenario 6: %d samples each", b.o.n6)
	if err := runInterleaved(b.o.n6, b.o.warm, []*probe{base, cl}, nil, 0, b.progress("scenario 6")); err != nil {
		return err
	}
	b.saveRaw("s6", base, cl)

	rep.p("Two maddy processes with storage.notify (`broker postgres`) on one fresh PostgreSQL database (`storage.imapsql` "+
		"driver postgres, server %q). A session on A APPENDs to Archive; IDLE sessions on INBOX on A and on B read "+
		"`* STATUS \"Archive\" (...)`; both are measured from the same APPEND. In the same run, interleaved sample by sample, "+
		"scenario 2's STATUS on a single instance (SQLite). %d samples each after %d warm-up samples.",
		b.o.pg, b.o.n6, b.o.warm)
	rep.p("")
	latencyTable(rep, base, cl)
	so := base.watches[0].fromOK.summary()
	ss := base.watches[0].fromSend.summary()
	xo := cl.watches[1].fromOK.summary()
	xs := cl.watches[1].fromSend.summary()
	ao := cl.watches[0].fromOK.summary()
	rep.p("Across instances minus single instance (SQLite), p50: %s ms from the tagged OK, %s ms from the command sent; "+
		"across instances minus same instance on PostgreSQL, p50: %s ms (the broker's share).",
		ms(xo.P50-so.P50), ms(xs.P50-ss.P50), ms(xo.P50-ao.P50))
	rep.p("")
	rep.target("6", "A → B STATUS p50 ≤ scenario 2's STATUS p50 + 5 ms (from the tagged OK)",
		fmt.Sprintf("%s ms vs %s ms + 5 ms (p99 %s ms)", ms(xo.P50), ms(so.P50), ms(xo.P99)), xo.P50 <= so.P50+5*time.Millisecond)
	return nil
}

// createDatabase creates a fresh database on the PostgreSQL server of the
// lib/pq DSN server (without dbname) and returns its DSN and a function
// that drops it.
func createDatabase(server string) (string, func() error, error) {
	admin, err := sql.Open("postgres", server+" dbname=postgres")
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("PostgreSQL at %q: %w", server, err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	name := "notify_bench_" + hex.EncodeToString(rnd[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() error {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		for try := 0; try < 20; try++ {
			admin.ExecContext(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
			if _, err = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)); err == nil {
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	}
	return server + " dbname=" + name, drop, nil
}
