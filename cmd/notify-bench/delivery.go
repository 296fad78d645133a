// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// deliveryConfig is maddy with an SMTP endpoint delivering into the store
// (through storage.notify with notify set), on the SQLite database at the
// absolute path dsn.
func deliveryConfig(notify bool, dsn string) string {
	store := "&local_mailboxes"
	wrapper := ""
	if notify {
		store = "&notified_mailboxes"
		wrapper = `
storage.notify notified_mailboxes {
	storage &local_mailboxes
	plain_clients draft
}
`
	}
	return fmt.Sprintf(`storage.imapsql local_mailboxes {
	driver sqlite3
	dsn %s
}
%s
imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage %s
}

smtp tcp://127.0.0.1:{port:smtp} {
	hostname maddy.test
	tls off
	deliver_to %s
}

openmetrics tcp://127.0.0.1:{port:metrics} { }
`, dsn, wrapper, store, store)
}

// deliveryUser is the account of scenario 7.
const deliveryUser = "s7@maddy.test"

// deliveryFolder names the n-th folder the seed creates besides INBOX and
// Idle.
func deliveryFolder(n int) string { return fmt.Sprintf("Folder%05d", n) }

// seedFolders creates the database of scenario 7 with stock maddy: the
// account, INBOX, Idle (where the IDLE session waits) and folders-2 more
// folders, by IMAP CREATE pipelined in chunks over one connection. It
// returns the folder that holds the database after maddy stopped cleanly.
func (b *bench) seedFolders(folders int) (string, error) {
	dir, err := os.MkdirTemp(b.base, fmt.Sprintf("s7-seed-%d-", folders))
	if err != nil {
		return "", err
	}
	srv, err := startMaddy(b.base, b.stockBin, fmt.Sprintf("s7-seed-%d", folders),
		deliveryConfig(false, filepath.Join(dir, "imapsql.db")), "imap", "smtp", "metrics")
	if err != nil {
		return "", err
	}
	c, err := dialIMAP("s7 seed", srv.addr("imap"), 4096)
	if err != nil {
		b.stopMaddy(srv)
		return "", err
	}
	err = func() error {
		defer c.close()
		if err := c.login(deliveryUser, benchPass); err != nil {
			return err
		}
		names := []string{"Idle"}
		for i := 0; len(names) < folders-1; i++ {
			names = append(names, deliveryFolder(i))
		}
		const chunk = 500
		for start := 0; start < len(names); start += chunk {
			end := min(start+chunk, len(names))
			var cmds strings.Builder
			var tags []string
			for _, n := range names[start:end] {
				tag := c.nextTag()
				tags = append(tags, tag)
				cmds.WriteString(tag + " CREATE " + quote(n) + "\r\n")
			}
			sent, err := c.send([]byte(cmds.String()))
			if err != nil {
				return err
			}
			for _, tag := range tags {
				res, err := c.wait(tag, sent)
				if err != nil {
					return err
				}
				if !res.ok() {
					return fmt.Errorf("s7 seed: CREATE: %s", res.tagged.text)
				}
			}
		}
		return nil
	}()
	if stopErr := srv.stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	return dir, err
}

// copySeed copies the seed database (and its WAL files, if any) into a new
// folder and returns the database's path there.
func (b *bench) copySeed(seed, name string) (string, error) {
	dir, err := os.MkdirTemp(b.base, name+"-db-")
	if err != nil {
		return "", err
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(filepath.Join(seed, "imapsql.db"+suffix))
		if os.IsNotExist(err) && suffix != "" {
			continue
		}
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "imapsql.db"+suffix), data, 0o600); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "imapsql.db"), nil
}

// smtpConn is one SMTP connection that delivers message after message.
type smtpConn struct {
	c *smtp.Client
}

func dialSMTP(addr string) (*smtpConn, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClient(nc, "127.0.0.1")
	if err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.Hello("bench.example.org"); err != nil {
		c.Close()
		return nil, err
	}
	return &smtpConn{c: c}, nil
}

// deliver sends one message to rcpt and returns the moment the reply to
// the end of DATA was read.
func (s *smtpConn) deliver(rcpt, msg string) (time.Time, error) {
	if err := s.c.Mail("sender@example.org"); err != nil {
		return time.Time{}, fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := s.c.Rcpt(rcpt); err != nil {
		return time.Time{}, fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := s.c.Data()
	if err != nil {
		return time.Time{}, fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return time.Time{}, fmt.Errorf("DATA write: %w", err)
	}
	if err := w.Close(); err != nil {
		return time.Time{}, fmt.Errorf("end of DATA: %w", err)
	}
	return time.Now(), nil
}

func (s *smtpConn) close() { s.c.Close() }

// deliveryRun is what one maddy process measured in scenario 7.
type deliveryRun struct {
	cpu     time.Duration // per delivery
	status  samples       // SMTP reply → * STATUS INBOX line (notify only)
	missing int           // deliveries whose STATUS line did not come
	learn   time.Duration // SELECT of the IDLE session (the account's baseline)
}

// statusWait bounds the wait for the STATUS line of one delivery.
const statusWait = 30 * time.Second

// deliveryMeasure starts bin on a copy of seed, IDLEs on Idle and delivers
// b.o.n7 messages to INBOX over one SMTP connection, after b.o.warm
// warm-up deliveries. With notify set it waits after each delivery for the
// IDLE session's STATUS INBOX line (at most statusWait) and records its latency
// from the SMTP reply.
func (b *bench) deliveryMeasure(bin string, notify bool, seed string, folders int) (*deliveryRun, error) {
	kind := "stock"
	if notify {
		kind = "notify"
	}
	name := fmt.Sprintf("s7-%s-%d", kind, folders)
	dsn, err := b.copySeed(seed, name)
	if err != nil {
		return nil, err
	}
	srv, err := startMaddy(b.base, bin, name, deliveryConfig(notify, dsn), "imap", "smtp", "metrics")
	if err != nil {
		return nil, err
	}
	defer b.stopMaddy(srv)
	idle, err := dialIMAP(name+" idle", srv.addr("imap"), 4096)
	if err != nil {
		return nil, err
	}
	defer idle.close()
	if err := idle.login(deliveryUser, benchPass); err != nil {
		return nil, err
	}
	run := &deliveryRun{}
	// With every folder's STATUS to learn (the account's first session),
	// SELECT takes long.
	tag := idle.nextTag()
	t0, err := idle.send([]byte(tag + " SELECT Idle\r\n"))
	if err != nil {
		return nil, err
	}
	if res, err := idle.waitTimeout(tag, t0, 5*time.Minute); err != nil {
		return nil, err
	} else if !res.ok() {
		return nil, fmt.Errorf("%s: SELECT Idle: %s", name, res.tagged.text)
	}
	run.learn = time.Since(t0)
	if err := idle.idle(); err != nil {
		return nil, err
	}
	sc, err := dialSMTP(srv.addr("smtp"))
	if err != nil {
		return nil, err
	}
	defer sc.close()
	re := reStatus("INBOX")
	one := func(i int, record bool) error {
		idle.drain()
		replied, err := sc.deliver(deliveryUser, message(fmt.Sprintf("s7-%d", i)))
		if err != nil {
			return fmt.Errorf("%s: delivery %d: %w", name, i, err)
		}
		if !notify {
			return nil
		}
		deadline := time.Now().Add(statusWait)
		for {
			l, err := idle.next(time.Until(deadline))
			if err != nil {
				run.missing++
				return nil
			}
			if re.MatchString(l.text) {
				if record {
					run.status = append(run.status, l.at.Sub(replied))
				}
				return nil
			}
		}
	}
	for i := 0; i < b.o.warm; i++ {
		if err := one(-1-i, false); err != nil {
			return nil, err
		}
	}
	time.Sleep(200 * time.Millisecond)
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	for i := 0; i < b.o.n7; i++ {
		if err := one(i, true); err != nil {
			return nil, err
		}
	}
	// Work a delivery started after its reply (the module's STATUS
	// queries) counts too.
	time.Sleep(200 * time.Millisecond)
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		return nil, err
	}
	run.cpu = (cpu1 - cpu0) / time.Duration(b.o.n7)
	return run, nil
}

// scenario7: SMTP deliveries to an account with many folders, stock maddy
// and maddy with storage.notify.
func (b *bench) scenario7() error {
	rep := b.rep
	rep.section("7. SMTP delivery to an account with many folders")
	type row struct {
		folders       int
		stock, notify *deliveryRun
	}
	var rows []row
	var failed []string
	for _, f := range b.o.folders {
		r, err := func() (row, error) {
			b.logf("scenario 7: seeding %d folders", f)
			t0 := time.Now()
			seed, err := b.seedFolders(f)
			if err != nil {
				return row{}, err
			}
			b.logf("scenario 7: %d folders created in %.1f s; %d deliveries each to stock and notify", f, time.Since(t0).Seconds(), b.o.n7)
			st, err := b.deliveryMeasure(b.stockBin, false, seed, f)
			if err != nil {
				return row{}, err
			}
			nt, err := b.deliveryMeasure(b.notifyBin, true, seed, f)
			if err != nil {
				return row{}, err
			}
			b.logf("scenario 7: %d folders: CPU per delivery stock %s ms, notify %s ms; STATUS p50 %s ms",
				f, ms(st.cpu), ms(nt.cpu), ms(nt.status.summary().P50))
			return row{f, st, nt}, nil
		}()
		if err != nil {
			b.logf("scenario 7: %d folders failed: %v", f, err)
			failed = append(failed, fmt.Sprintf("%d folders: %v", f, firstLine(err.Error())))
			rep.target("7", fmt.Sprintf("%d folders: measured", f), "failed: "+firstLine(err.Error()), false)
			continue
		}
		rows = append(rows, r)
	}
	rep.p("One account with N folders (INBOX, Idle and N−2 others, created by pipelined IMAP CREATE on stock maddy, the same "+
		"SQLite database copied for each process); one IMAP session IDLEs on Idle; one SMTP connection delivers %d small "+
		"messages to the account's INBOX, one after the other, after %d warm-up deliveries. Stock maddy and maddy with "+
		"storage.notify (`plain_clients draft`, so the IDLE session is told `* STATUS INBOX (...)`) run in turn on the same "+
		"seed. CPU per delivery: utime+stime of the maddy process (/proc/PID/stat) before the first and 200 ms after the last "+
		"measured delivery, divided by the deliveries. STATUS latency: from the moment the reply to the end of DATA was read "+
		"to the moment the IDLE session's reader read the `* STATUS INBOX` line; the harness waits for it before the next "+
		"delivery (stock maddy sends no line, and the next delivery starts at once).", b.o.n7, b.o.warm)
	rep.p("")
	rep.p("| folders | stock CPU per delivery, ms | notify CPU per delivery, ms | notify / stock | STATUS p50, ms | p90 | p99 | max | missing STATUS lines | SELECT Idle (notify: learns every folder's STATUS), ms |")
	rep.p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		s := r.notify.status.summary()
		rep.p("| %d | %s | %s | %s | %s | %s | %s | %s | %d | %s |", r.folders, ms(r.stock.cpu), ms(r.notify.cpu),
			fmtRatio(r.notify.cpu, r.stock.cpu), ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), r.notify.missing, ms(r.notify.learn))
	}
	rep.p("")
	for _, f := range failed {
		rep.p("**Failed:** %s", f)
		rep.p("")
	}
	for _, r := range rows {
		if r.folders < 1000 {
			continue
		}
		ratio, ok := ratio(r.notify.cpu, r.stock.cpu)
		rep.target("7", fmt.Sprintf("%d folders: CPU per delivery within 1.5× of stock's", r.folders),
			fmt.Sprintf("%.2f (%s / %s ms)", ratio, ms(r.notify.cpu), ms(r.stock.cpu)), ok && ratio <= 1.5)
		s := r.notify.status.summary()
		rep.target("7", fmt.Sprintf("%d folders: STATUS p50 ≤ 2 ms after the SMTP reply", r.folders),
			fmt.Sprintf("%s ms (%d missing)", ms(s.P50), r.notify.missing), s.N > 0 && s.P50 <= 2*time.Millisecond && r.notify.missing == 0)
	}
	if len(rows) > 1 {
		lo, hi := rows[0], rows[len(rows)-1]
		ratio, ok := ratio(hi.notify.cpu, lo.notify.cpu)
		rep.target("7", fmt.Sprintf("notify's CPU per delivery flat from %d to %d folders (≤ 1.5×)", lo.folders, hi.folders),
			fmt.Sprintf("%.2f (%s / %s ms)", ratio, ms(hi.notify.cpu), ms(lo.notify.cpu)), ok && ratio <= 1.5)
	}
	return nil
}

// parseInts parses a comma-separated list of positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			return nil, fmt.Errorf("%q: want integers ≥ 2", f)
		}
		out = append(out, n)
	}
	return out, nil
}
