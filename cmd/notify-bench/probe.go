// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// watch is one IDLE session a probe listens on: the line it measures and
// the lines that complete a sample (the measured one included).
type watch struct {
	label  string
	conn   *imapConn
	want   *regexp.Regexp
	settle []*regexp.Regexp

	// late are lines that may still arrive after the sample completed
	// (settle did not wait for them): found waiting before the next
	// sample, they are dropped without being counted as stray.
	late []*regexp.Regexp

	fromOK, fromSend samples
	// stray counts lines that were waiting before a sample started (none
	// are expected: every sample waits for its lines to complete).
	stray int
}

// drain drops the lines waiting on the watch's connection and counts those
// that are not late ones as stray.
func (w *watch) drain() {
	for {
		select {
		case l, ok := <-w.conn.lines:
			if !ok {
				return
			}
			if !matchesAny(w.late, l.text) {
				w.stray++
			}
		default:
			return
		}
	}
}

func matchesAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// probe is one kind of change and the sessions that must hear of it. Each
// sample runs the command returned by action on actor and waits for every
// watch's lines. action gets the probe's own sequence number (0, 1, ...).
type probe struct {
	name    string
	actor   *imapConn
	action  func(i int) string
	watches []*watch
	timeout time.Duration

	seq      int // the probe's own count of actions (warm-up included)
	samples  int
	cmdTime  samples // the acting command, from sent to its tagged OK
	failures []string
	retries  int // commands repeated after SQLite's "database is locked"
}

// sample runs one sample; record=false runs it as a warm-up.
func (p *probe) sample(i int, record bool) error {
	for _, w := range p.watches {
		w.drain()
	}
	var res result
	var err error
	for try := 0; ; try++ {
		res, err = p.actor.cmd(p.action(p.seq))
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if res.ok() {
			break
		}
		if strings.Contains(res.tagged.text, "locked") && try < 10 {
			p.retries++
			time.Sleep(time.Duration(try+1) * time.Millisecond)
			continue
		}
		return fmt.Errorf("%s: %s", p.name, res.tagged.text)
	}
	p.seq++
	deadline := time.Now().Add(p.timeout)
	for _, w := range p.watches {
		var wantAt time.Time
		seen := make([]bool, len(w.settle))
		left := len(w.settle)
		// Lines that arrived before the tagged OK are in the channel
		// already; the reader stamped them when it read them.
		for left > 0 {
			l, err := w.conn.next(time.Until(deadline))
			if err != nil {
				msg := fmt.Sprintf("sample %d, %s: %v", i, w.label, err)
				p.failures = append(p.failures, msg)
				return nil // counted as a failure; the run goes on
			}
			if wantAt.IsZero() && w.want.MatchString(l.text) {
				wantAt = l.at
			}
			for j, re := range w.settle {
				if !seen[j] && re.MatchString(l.text) {
					seen[j] = true
					left--
					break
				}
			}
		}
		if record {
			w.fromOK = append(w.fromOK, wantAt.Sub(res.tagged.at))
			w.fromSend = append(w.fromSend, wantAt.Sub(res.sent))
		}
	}
	if record {
		p.samples++
		p.cmdTime = append(p.cmdTime, res.tagged.at.Sub(res.sent))
	}
	return nil
}

// idleSession logs in as user, selects mailbox, runs the extra commands
// (NOTIFY SET for Dovecot) and starts IDLE.
func idleSession(name, addr, user, pass, mailbox string, extra ...string) (*imapConn, error) {
	c, err := dialIMAP(name, addr, 4096)
	if err != nil {
		return nil, err
	}
	if err := c.login(user, pass); err != nil {
		return nil, err
	}
	if _, err := c.mustOK("SELECT " + quote(mailbox)); err != nil {
		return nil, err
	}
	for _, e := range extra {
		if _, err := c.mustOK(e); err != nil {
			return nil, err
		}
	}
	if err := c.idle(); err != nil {
		return nil, err
	}
	return c, nil
}

// actorSession logs in as user and creates the mailboxes (an existing one is
// not an error).
func actorSession(name, addr, user, pass string, create ...string) (*imapConn, error) {
	c, err := dialIMAP(name, addr, 4096)
	if err != nil {
		return nil, err
	}
	if err := c.login(user, pass); err != nil {
		return nil, err
	}
	for _, m := range create {
		if _, err := c.cmd("CREATE " + quote(m)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Regular expressions of the lines the probes wait for.
var (
	reExists = regexp.MustCompile(`^\* \d+ EXISTS$`)
	reRecent = regexp.MustCompile(`^\* \d+ RECENT$`)
	reFetch  = regexp.MustCompile(`^\* \d+ FETCH \(UID \d+ .*BODYSTRUCTURE`)
)

func reStatus(mbox string) *regexp.Regexp {
	return regexp.MustCompile(`^\* STATUS "?` + regexp.QuoteMeta(mbox) + `"? \(`)
}

func reList(mbox string) *regexp.Regexp {
	return regexp.MustCompile(`^\* LIST \([^)]*\) "[^"]*" "?` + regexp.QuoteMeta(mbox) + `"?$`)
}

// listProbeRe matches the LIST line of any mailbox a LIST probe creates.
var listProbeRe = regexp.MustCompile(`^\* LIST \([^)]*\) "[^"]*" "?Box\d+"?$`)

// runInterleaved runs n recorded samples of every probe (after warm
// iterations that are not recorded), interleaved sample by sample: in
// iteration i every probe takes one sample, starting with probe i mod len,
// so that no probe always goes first. The sparse probes (Dovecot, ~500 ms a
// sample) take turns: one sparse sample every step iterations, until each
// has sparseN samples.
func runInterleaved(n, warm int, probes []*probe, sparse []*probe, sparseN int, progress func(string)) error {
	step := 0
	if len(sparse) > 0 && sparseN > 0 {
		step = n / (len(sparse) * (sparseN + 1))
		if step < 1 {
			step = 1
		}
	}
	sparseRun := 0
	for i := -warm; i < n; i++ {
		record := i >= 0
		for k := range probes {
			p := probes[(k+max(i, 0))%len(probes)]
			if err := p.sample(i+warm, record); err != nil {
				return err
			}
		}
		if step > 0 && i >= 0 && i%step == 0 && sparseRun < len(sparse)*(sparseN+1) {
			p := sparse[sparseRun%len(sparse)]
			// The first sample of each sparse probe is its warm-up.
			if err := p.sample(n+warm+sparseRun, sparseRun >= len(sparse)); err != nil {
				return err
			}
			sparseRun++
		}
		if progress != nil && i > 0 && i%200 == 0 {
			progress(fmt.Sprintf("%d/%d", i, n))
		}
	}
	// Sparse samples still owed (small n).
	for sparseRun < len(sparse)*(sparseN+1) {
		p := sparse[sparseRun%len(sparse)]
		if err := p.sample(n+warm+sparseRun, sparseRun >= len(sparse)); err != nil {
			return err
		}
		sparseRun++
	}
	return nil
}
