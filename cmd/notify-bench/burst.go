// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

const mStatusQueries = "maddy_notify_status_queries_total"

var statusItemRe = regexp.MustCompile(`(MESSAGES|UIDNEXT|UNSEEN) (\d+)`)

// statusValues parses the items of a STATUS line, in any order.
func statusValues(l string) (map[string]int, bool) {
	v := map[string]int{}
	for _, m := range statusItemRe.FindAllStringSubmatch(l, -1) {
		n, _ := strconv.Atoi(m[2])
		v[m[1]] = n
	}
	return v, len(v) == 3
}

func fmtStatus(v map[string]int) string {
	return fmt.Sprintf("MESSAGES %d UIDNEXT %d UNSEEN %d", v["MESSAGES"], v["UIDNEXT"], v["UNSEEN"])
}

// scenario5: a burst of APPENDs to a mailbox the account's IDLE sessions do
// not have selected.
func (b *bench) scenario5() error {
	rep := b.rep
	rep.section("5. Bursts")
	srv, err := b.startMaddy(b.notifyBin, "s5-notify", notifyConfig("sqlite3", "imapsql.db", "none"))
	if err != nil {
		return err
	}
	defer b.stopMaddy(srv)
	const user = "s5@maddy.test"
	actor, err := actorSession("s5 actor", srv.addr("imap"), user, benchPass, "Archive")
	if err != nil {
		return err
	}
	var idles []*imapConn
	for i := 0; i < b.o.burstSess; i++ {
		c, err := idleSession(fmt.Sprintf("s5 idle %d", i), srv.addr("imap"), user, benchPass, "INBOX")
		if err != nil {
			return err
		}
		idles = append(idles, c)
	}
	time.Sleep(500 * time.Millisecond) // the account's baseline STATUS queries
	before, err := srv.metrics()
	if err != nil {
		return err
	}

	// Collect each session's STATUS lines while the burst runs.
	type got struct {
		lines []line
		other int
	}
	gots := make([]got, len(idles))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	lastLine := time.Now()
	re := reStatus("Archive")
	for i, c := range idles {
		wg.Add(1)
		go func(i int, c *imapConn) {
			defer wg.Done()
			for {
				select {
				case l, ok := <-c.lines:
					if !ok {
						return
					}
					mu.Lock()
					if re.MatchString(l.text) {
						gots[i].lines = append(gots[i].lines, l)
					} else {
						gots[i].other++
					}
					lastLine = time.Now()
					mu.Unlock()
				case <-stop:
					return
				}
			}
		}(i, c)
	}

	b.logf("scenario 5: %d APPENDs", b.o.burst)
	retries := 0
	t0 := time.Now()
	for i := 0; i < b.o.burst; i++ {
		for try := 0; ; try++ {
			res, err := actor.appendMsg("Archive", message(fmt.Sprintf("burst-%d", i)))
			if err != nil {
				close(stop)
				return err
			}
			if res.ok() {
				break
			}
			if !strings.Contains(res.tagged.text, "locked") || try >= 20 {
				close(stop)
				return fmt.Errorf("APPEND %d: %s", i, res.tagged.text)
			}
			retries++
			time.Sleep(time.Millisecond)
		}
	}
	burstDur := time.Since(t0)
	// Wait until no line has come for a second (at most 30 s).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		quiet := time.Since(lastLine)
		mu.Unlock()
		if quiet > time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Since(t0)
	close(stop)
	wg.Wait()
	after, err := srv.metrics()
	if err != nil {
		return err
	}
	queries := after[mStatusQueries] - before[mStatusQueries]

	res, err := actor.mustOK("STATUS Archive (MESSAGES UIDNEXT UNSEEN)")
	if err != nil {
		return err
	}
	var now map[string]int
	for _, l := range res.untagged {
		if v, ok := statusValues(l.text); ok && strings.HasPrefix(l.text, "* STATUS") {
			now = v
		}
	}
	if now == nil {
		return fmt.Errorf("STATUS Archive: no values in %v", res.untagged)
	}

	rep.p("%d IDLE sessions of one account on INBOX (maddy with storage.notify, SQLite); another session of the account "+
		"APPENDs %d small messages to Archive, one after the other as fast as it gets its OKs (%.0f ms in all, %.0f APPENDs/s; "+
		"%d APPENDs repeated after SQLite's \"database is locked\"). Then the harness waits until no line has come for a "+
		"second (%.1f s after the first APPEND), asks `STATUS Archive` and compares. STATUS queries: the module's "+
		"`%s` before and after the burst (openmetrics endpoint).",
		len(idles), b.o.burst, float64(burstDur.Milliseconds()), float64(b.o.burst)/burstDur.Seconds(), retries,
		drained.Seconds(), mStatusQueries)
	rep.p("")
	rep.p("`STATUS Archive` after the burst: `%s`.", fmtStatus(now))
	rep.p("")
	rep.p("| session | STATUS lines | other lines | last STATUS | exact | never older after newer |")
	rep.p("| ---: | ---: | ---: | --- | --- | --- |")
	allExact, allMono := true, true
	minLines, maxLines := -1, 0
	for i, g := range gots {
		last := "(none)"
		exact := false
		mono := true
		prev := -1
		for _, l := range g.lines {
			v, _ := statusValues(l.text)
			if v["MESSAGES"] < prev {
				mono = false
			}
			prev = v["MESSAGES"]
		}
		if n := len(g.lines); n > 0 {
			v, _ := statusValues(g.lines[n-1].text)
			last = fmtStatus(v)
			exact = last == fmtStatus(now)
		}
		allExact = allExact && exact
		allMono = allMono && mono
		n := len(g.lines)
		if minLines < 0 || n < minLines {
			minLines = n
		}
		if n > maxLines {
			maxLines = n
		}
		rep.p("| %d | %d | %d | %s | %s | %s |", i+1, n, g.other, last, yesNo(exact), yesNo(mono))
	}
	rep.p("")
	rep.p("STATUS queries during the burst: %.0f for %d APPENDs and %d sessions (%.3f per APPEND); "+
		"STATUS lines per session: %d to %d.", queries, b.o.burst, len(idles), queries/float64(b.o.burst), minLines, maxLines)
	rep.p("")
	rep.target("5", "the last STATUS each session got is exact", fmt.Sprintf("%s for all %d sessions", yesNoPlain(allExact), len(idles)), allExact)
	rep.target("5", fmt.Sprintf("STATUS lines per session ≤ %d", b.o.burst), fmt.Sprintf("%d to %d", minLines, maxLines), maxLines <= b.o.burst)
	rep.target("5", "STATUS queries ≤ STATUS lines sent to one session (work shared across the account's sessions)",
		fmt.Sprintf("%.0f queries; %d lines to the session that got the most, %d to the one that got the fewest", queries, maxLines, minLines),
		queries <= float64(maxLines))
	return nil
}

func yesNoPlain(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
