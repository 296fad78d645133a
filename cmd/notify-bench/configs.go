// SPDX-License-Identifier: GPL-3.0-or-later

package main

import "fmt"

// The maddy configurations the harness runs ({port:NAME} is filled in by
// startMaddy; state_dir, runtime_dir and hostname are prepended). Both
// kinds log in with `auth dummy` (any password; storage.imapsql creates
// the account at its first login) and serve maddy's openmetrics endpoint.

// stockConfig is stock maddy: the IMAP endpoint on storage.imapsql.
func stockConfig(driver, dsn string) string {
	return fmt.Sprintf(`storage.imapsql local_mailboxes {
	driver %s
	dsn %s
}

imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &local_mailboxes
}

openmetrics tcp://127.0.0.1:{port:metrics} { }
`, driver, dsn)
}

// notifyConfig is maddy with storage.notify around the same store, all its
// defaults (every event, status_mailboxes all, new_message_fetch FLAGS
// BODYSTRUCTURE) but plain_clients draft (the whole mapping for plain
// clients in IDLE), and the given broker.
func notifyConfig(driver, dsn, broker string) string {
	return notifyConfigPlain(driver, dsn, broker, "draft")
}

// notifyConfigPlain is notifyConfig with the given plain_clients value.
func notifyConfigPlain(driver, dsn, broker, plain string) string {
	return fmt.Sprintf(`storage.imapsql local_mailboxes {
	driver %s
	dsn %s
}

storage.notify notified_mailboxes {
	storage &local_mailboxes
	plain_clients %s
	broker %s
}

imap tcp://127.0.0.1:{port:imap} {
	tls off
	auth dummy
	storage &notified_mailboxes
}

openmetrics tcp://127.0.0.1:{port:metrics} { }
`, driver, dsn, plain, broker)
}
