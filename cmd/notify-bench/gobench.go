// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var benchLineRe = regexp.MustCompile(`^BenchmarkPublishUnrelated/sessions=(\d+)/(\w+)-\d+\s+(\d+)\s+([\d.]+) ns/op(?:\s+(\d+) B/op\s+(\d+) allocs/op)?`)

// scenario4 runs registry's BenchmarkPublishUnrelated.
func (b *bench) scenario4() error {
	rep := b.rep
	rep.section("4. Dispatch cost against unrelated sessions")
	args := []string{"test", "-run", "^$", "-bench", "BenchmarkPublishUnrelated", "-benchmem",
		"-benchtime", b.o.benchtime, "-count", strconv.Itoa(b.o.benchcount), "./registry"}
	b.logf("scenario 4: go %s", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, out.String())
	}
	type key struct {
		n    int
		kind string
	}
	nsop := map[key][]float64{}
	allocs := map[key]string{}
	var sizes []int
	var kinds []string
	for _, l := range strings.Split(out.String(), "\n") {
		m := benchLineRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		v, _ := strconv.ParseFloat(m[4], 64)
		k := key{n, m[2]}
		if _, seen := nsop[k]; !seen {
			if !containsInt(sizes, n) {
				sizes = append(sizes, n)
			}
			if !containsStr(kinds, m[2]) {
				kinds = append(kinds, m[2])
			}
		}
		nsop[k] = append(nsop[k], v)
		if m[5] != "" {
			allocs[k] = m[5] + " B/op, " + m[6] + " allocs/op"
		}
	}
	if len(sizes) < 2 {
		return fmt.Errorf("no benchmark results in:\n%s", out.String())
	}
	os.WriteFile(b.rawPath("s4-gotest.txt"), out.Bytes(), 0o644)

	rep.p("`go %s` (in the checkout). One operation: `Registry.Publish` of one event of the account `target` and the wait "+
		"until its one IDLE session's connection (`Out.Write`) has been handed the line, with the given number of sessions of "+
		"other accounts registered (10 per account, each with INBOX selected and in IDLE). "+
		"STATUS: a MessageAppend in Archive (one STATUS query to a fake store that answers at once, one `* STATUS` line); "+
		"LIST: a MailboxCreate (one `* LIST` line). Each size has its own registry, built before and closed after its "+
		"sub-benchmarks; with -count the sizes take turns. Median and minimum of the %d runs, ns/op.",
		strings.Join(args, " "), b.o.benchcount)
	rep.p("")
	rep.p("| kind | sessions of other accounts | ns/op median | ns/op min | runs | memory |")
	rep.p("| --- | ---: | ---: | ---: | ---: | --- |")
	for _, kind := range kinds {
		for _, n := range sizes {
			v := nsop[key{n, kind}]
			rep.p("| %s | %d | %.0f | %.0f | %d | %s |", kind, n, median(v), minF(v), len(v), allocs[key{n, kind}])
		}
	}
	rep.p("")
	lo, hi := sizes[0], sizes[len(sizes)-1]
	for _, kind := range kinds {
		a, z := median(nsop[key{lo, kind}]), median(nsop[key{hi, kind}])
		r := z / a
		rep.p("%s: ratio %d / %d sessions = %.3f (medians).", kind, hi, lo, r)
		rep.target("4", fmt.Sprintf("%s dispatch ns/op ratio %d / %d sessions ≤ 1.5", kind, hi, lo),
			fmt.Sprintf("%.3f (%.0f / %.0f ns/op)", r, z, a), r <= 1.5)
	}
	rep.p("")
	return nil
}

func (b *bench) rawPath(name string) string {
	if b.o.raw == "" {
		return os.DevNull
	}
	return b.o.raw + "/" + name
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minF(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		if x < m {
			m = x
		}
	}
	return m
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
