// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// DialClient connects a go-imap v2 client to the IMAP server at addr
// (plain TCP) and logs in as user with pass; it fails the test if either
// step fails. The client is closed when the test ends. Unilateral data the
// server sends is handled by imapclient's defaults (ignored).
func DialClient(t testing.TB, addr, user, pass string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatalf("testkit: dial IMAP %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("testkit: LOGIN %s: %v", user, err)
	}
	return c
}

// SendMail submits msg from from to the recipients to over SMTP at addr
// (EHLO localhost, no TLS, no authentication) and fails the test unless
// the server accepts it. The whole exchange must finish within
// StartTimeout.
func SendMail(t testing.TB, addr, from string, to []string, msg string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ExpectTimeout)
	if err != nil {
		t.Fatalf("testkit: dial SMTP %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(StartTimeout))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		t.Fatalf("testkit: SMTP greeting: %v", err)
	}
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("testkit: SMTP %s: %v", what, err)
		}
	}
	step("EHLO", c.Hello("localhost"))
	step("MAIL FROM", c.Mail(from))
	for _, rcpt := range to {
		step("RCPT TO "+rcpt, c.Rcpt(rcpt))
	}
	w, err := c.Data()
	step("DATA", err)
	_, err = w.Write([]byte(msg))
	step("DATA write", err)
	step("end of DATA", w.Close())
	step("QUIT", c.Quit())
}

// Message returns a small RFC 5322 message with the given subject: From,
// To, Subject, Date, Message-ID and MIME headers and a one-line text body,
// every line ending in CRLF. The result depends only on subject.
func Message(subject string) string {
	sum := sha256.Sum256([]byte(subject))
	lines := []string{
		"From: Sender <sender@" + Hostname + ">",
		"To: User <user@" + Hostname + ">",
		"Subject: " + subject,
		"Date: Mon, 02 Jan 2006 15:04:05 +0000",
		fmt.Sprintf("Message-ID: <%s@%s>", hex.EncodeToString(sum[:8]), Hostname),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Hello from maddy-notify's tests.",
		"",
	}
	return strings.Join(lines, "\r\n")
}
