// SPDX-License-Identifier: GPL-3.0-or-later

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/maddy-notify/maddy-notify/internal/maddyproc"
)

// dovecotProc is a private Dovecot instance: its own configuration, base
// and state folders and maildirs under a temporary folder, IMAP on a
// loopback port, no system service involved.
type dovecotProc struct {
	dir     string
	conf    string
	addr    string
	version string
}

// dovecotNotify is what the IDLE session asks Dovecot for with NOTIFY
// (RFC 5465): in the selected mailbox new messages with their UID and
// BODYSTRUCTURE, expunges and flag changes; in the user's other mailboxes
// new messages and expunges (as STATUS), mailbox names (LIST) and
// subscriptions.
const dovecotNotify = "NOTIFY SET (selected (MessageNew (UID BODYSTRUCTURE) MessageExpunge FlagChange)) " +
	"(personal (MessageNew MessageExpunge MailboxName SubscriptionChange))"

const dovecotPass = "pass"

// startDovecot sets up and starts the private instance, or says why it
// cannot.
func startDovecot(base string) (*dovecotProc, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		return nil, fmt.Errorf("dovecot is not installed (Debian package dovecot-imapd)")
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("a private Dovecot instance needs root (it switches to the mail user)")
	}
	u, err := user.Lookup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("no dovecot system user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	ver, _ := exec.Command(bin, "--version").Output()

	dir, err := os.MkdirTemp(base, "dovecot-")
	if err != nil {
		return nil, err
	}
	// Dovecot's mail processes run as the dovecot user: they must reach
	// the maildirs.
	for _, d := range []string{base, dir} {
		os.Chmod(d, 0o755)
	}
	for _, d := range []string{"run", "state", "mail", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"mail", "home"} {
		if err := os.Chown(filepath.Join(dir, d), uid, gid); err != nil {
			return nil, err
		}
	}
	port, err := maddyproc.FreePort()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`# notify-bench: a private Dovecot on loopback
base_dir = %[1]s/run
state_dir = %[1]s/state
instance_name = notify-bench-%[3]d
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = %[1]s/dovecot.log
mail_location = maildir:%[1]s/mail/%%u
mailbox_list_index = yes
passdb {
  driver = static
  args = password=%[4]s
}
userdb {
  driver = static
  args = uid=%[5]d gid=%[6]d home=%[1]s/home/%%u
}
first_valid_uid = %[5]d
first_valid_gid = %[6]d
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]d
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-reader {
    mode = 0666
  }
  unix_listener stats-writer {
    mode = 0666
  }
}
protocol imap {
  mail_max_userip_connections = 1000
}
`, dir, port, os.Getpid(), dovecotPass, uid, gid)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// The master daemonises; its output goes to a file (a pipe would stay
	// open in the daemon and keep Run waiting).
	outPath := filepath.Join(dir, "dovecot.out")
	outf, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = outf, outf
	err = cmd.Run()
	outf.Close()
	if err != nil {
		out, _ := os.ReadFile(outPath)
		return nil, fmt.Errorf("dovecot -c %s: %v: %s", confPath, err, out)
	}
	d := &dovecotProc{dir: dir, conf: confPath, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		version: strings.TrimSpace(string(ver))}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr, time.Second)
		if err == nil {
			c.Close()
			return d, nil
		}
		if time.Now().After(deadline) {
			d.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			return nil, fmt.Errorf("dovecot not listening on %s: %v\n%s", d.addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the instance's master process (which ends its children).
func (d *dovecotProc) stop() {
	pidFile := filepath.Join(d.dir, "run", "master.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dovecot: %v\n", err)
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200; i++ {
		// The master is not our child (it daemonised): signal 0 probes
		// whether it is still there.
		if err := syscall.Kill(pid, 0); err != nil {
			return
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			return // exited; nobody reaps it in a container without init
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "dovecot master %d did not stop within 10 s of SIGTERM\n", pid)
}
