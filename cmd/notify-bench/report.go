// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// report collects the Markdown sections and the target rows.
type report struct {
	body      strings.Builder
	targets   []targetRow
	durations []string
	loads     []string
	findings  []string
	loadStart string
	loadEnd   string
	total     time.Duration
}

type targetRow struct {
	scenario, target, measured string
	met                        *bool // nil: not measured
}

func newReport() *report { return &report{} }

// p writes one line (format and args as fmt.Sprintf).
func (r *report) p(format string, args ...any) {
	if len(args) == 0 {
		r.body.WriteString(format)
	} else {
		fmt.Fprintf(&r.body, format, args...)
	}
	r.body.WriteByte('\n')
}

func (r *report) section(title string) {
	r.p("## %s", title)
	r.p("")
}

// target records a target; met may be a bool or nil (not measured).
func (r *report) target(scenario, target, measured string, met any) {
	row := targetRow{scenario: scenario, target: target, measured: measured}
	if b, ok := met.(bool); ok {
		row.met = &b
	}
	r.targets = append(r.targets, row)
}

func (b *bench) render() string {
	r := b.rep
	var out strings.Builder
	w := func(format string, args ...any) {
		fmt.Fprintf(&out, format, args...)
		out.WriteByte('\n')
	}
	w("# Benchmarks")
	w("")
	w("Written by `cmd/notify-bench` (`make bench`) on %s; every figure below is from that one run. "+
		"Run it again rather than edit it; only a closing section \"Analysis\", where present, is added by hand after the run.",
		b.started.UTC().Format("2006-01-02 15:04 MST"))
	w("")
	w("What the harness does: it builds stock maddy %s and maddy %s with storage.notify, starts real maddy processes "+
		"(and a private Dovecot, when installed) on loopback, and drives them with raw IMAP clients whose reader goroutines "+
		"time-stamp every line as soon as it is read off the socket (bufio, before any channel hop). Every latency is measured "+
		"from the acting session's tagged OK (the moment its reader read the OK line) and from the moment the acting "+
		"session's command was written; latency series that are compared run in the same run, interleaved sample by sample.",
		maddyVersion, maddyVersion)
	w("")
	w("## Machine and build")
	w("")
	for _, m := range machine() {
		w("- %s", m)
	}
	w("- load average (1, 5, 15 min): %s at the start of the measurements, %s at the end", r.loadStart, r.loadEnd)
	w("- the machine's CPU time busy in the 3 s before each scenario (the harness waits, up to 3 minutes, for less than %.0f%%): %s",
		100*b.o.maxBusy, strings.Join(r.loads, "; "))
	w("- commit: %s", b.commit())
	w("- maddy builds:")
	for _, c := range b.buildCmds {
		w("  - %s", c)
	}
	w("- command: `%s`", commandLine())
	w("- run time: %.0f s (%s)", r.total.Seconds(), strings.Join(r.durations, ", "))
	w("")
	w("## Targets")
	w("")
	w("| scenario | target | measured | met |")
	w("| --- | --- | --- | --- |")
	for _, t := range r.targets {
		met := "not measured"
		if t.met != nil {
			met = yesNo(*t.met)
		}
		w("| %s | %s | %s | %s |", t.scenario, t.target, t.measured, met)
	}
	w("")
	if len(r.findings) > 0 {
		w("## Findings")
		w("")
		for _, f := range r.findings {
			w("- %s", f)
		}
		w("")
	}
	out.WriteString(r.body.String())
	w("## Reproducing")
	w("")
	w("```")
	w("make bench                                   # everything, writes docs/benchmarks.md (about 5 minutes)")
	w("go run ./cmd/notify-bench -quick -o /tmp/b.md   # every scenario with small counts, under 2 minutes")
	w("go run ./cmd/notify-bench -only 2,6 -o /tmp/b.md # some scenarios")
	w("go run ./cmd/notify-bench -help                  # counts, rates, PostgreSQL DSN, profiles")
	w("```")
	w("")
	w("Scenario 2 runs Dovecot only when `dovecot` is installed (Debian: `apt-get install dovecot-imapd`; the harness " +
		"starts its own instance with its own configuration and never touches a system service; it needs root). Scenario 6 needs " +
		"a PostgreSQL server whose user may CREATE DATABASE (`-pg`, default 127.0.0.1:5432 user postgres). Raw samples (CSV) " +
		"and, with `-profile`, CPU profiles of maddy are written to `build/bench/`.")
	return out.String()
}

func commandLine() string {
	args := append([]string{"notify-bench"}, os.Args[1:]...)
	return strings.Join(args, " ")
}
