// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	imapsql "github.com/foxcpp/go-imap-sql"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/internal/testkit"
	"github.com/maddy-notify/maddy-notify/mapping"
)

// newInnerSQL is newInner on the given driver and DSN.
func newInnerSQL(t testing.TB, driver, dsn, dir string) module.ManageableStorage {
	t.Helper()
	name := fmt.Sprintf("inner_%d", instanceSeq.Add(1))
	mod, err := module.Get("storage.imapsql")("storage.imapsql", name, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := mod.Init(config.NewMap(nil, config.Node{
		Name: "storage.imapsql",
		Args: []string{name},
		Children: []config.Node{
			{Name: "driver", Args: []string{driver}},
			{Name: "dsn", Args: []string{dsn}},
			{Name: "msg_store", Args: []string{"fs", filepath.Join(dir, "messages")}},
		},
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.(io.Closer).Close() })
	return mod.(module.ManageableStorage)
}

// TestBatchStatusSchema fails loudly when go-imap-sql's database schema
// moves on from the one innerBatchStatus's query is written for: read the
// new schema (go-imap-sql's sql.go) and what User.Status reads, adapt the
// query and batchSchemaVersion.
func TestBatchStatusSchema(t *testing.T) {
	if imapsql.SchemaVersion != batchSchemaVersion {
		t.Fatalf("go-imap-sql's schema is version %d; innerBatchStatus knows version %d", imapsql.SchemaVersion, batchSchemaVersion)
	}
	if innerBatchStatus(&notAStorage{}) != nil {
		t.Fatal("innerBatchStatus accepted a module that is not storage.imapsql")
	}
}

// TestBatchStatusMatches: the batch STATUS of every mailbox equals
// User.Status of each, on SQLite and PostgreSQL, for accounts with many
// mailboxes of random contents (seen and unseen messages, expunged ones,
// messages that are not \Recent in the store because they came while a
// session had the mailbox selected).
func TestBatchStatusMatches(t *testing.T) {
	for _, driver := range []string{"sqlite3", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			dir := t.TempDir()
			dsn := filepath.Join(dir, "imapsql.db")
			if driver == "postgres" {
				dsn = testkit.Postgres(t)
			}
			store := newInnerSQL(t, driver, dsn, dir)
			batch := innerBatchStatus(store)
			if batch == nil {
				t.Fatal("innerBatchStatus(storage.imapsql) = nil")
			}
			rng := rand.New(rand.NewSource(1))
			accounts := []string{"a@maddy.test", "b@maddy.test"}
			for _, acct := range accounts {
				if err := store.CreateIMAPAcct(acct); err != nil {
					t.Fatal(err)
				}
				u, err := store.GetIMAPAcct(acct)
				if err != nil {
					t.Fatal(err)
				}
				names := []string{"INBOX"}
				for i := 0; i < 40; i++ {
					name := fmt.Sprintf("Box%02d", i)
					if i%5 == 1 {
						name = fmt.Sprintf("Box%02d.Sub", i-1)
					}
					if err := u.CreateMailbox(name); err != nil {
						t.Fatal(err)
					}
					names = append(names, name)
				}
				for _, name := range names {
					n := rng.Intn(7)
					for k := 0; k < n; k++ {
						var flags []string
						if rng.Intn(2) == 0 {
							flags = append(flags, imap.SeenFlag)
						}
						msg := fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", k)
						if err := u.CreateMessage(name, flags, time.Now(), bytes.NewBufferString(msg), nil); err != nil {
							t.Fatal(err)
						}
					}
					if n == 0 || rng.Intn(3) == 0 {
						continue
					}
					// Expunge some, flip \Seen on one.
					_, mbox, err := u.GetMailbox(name, false, nopConn{})
					if err != nil {
						t.Fatal(err)
					}
					var del imap.SeqSet
					for k := 1; k <= n; k++ {
						if rng.Intn(2) == 0 {
							del.AddNum(uint32(k))
						}
					}
					if !del.Empty() {
						if err := mbox.UpdateMessagesFlags(false, &del, imap.AddFlags, true, []string{imap.DeletedFlag}); err != nil {
							t.Fatal(err)
						}
						if err := mbox.Expunge(); err != nil {
							t.Fatal(err)
						}
					}
					var one imap.SeqSet
					one.AddNum(1)
					mbox.UpdateMessagesFlags(false, &one, imap.RemoveFlags, true, []string{imap.SeenFlag}) // may be expunged
					// A message that comes while the mailbox is selected is
					// that session's \Recent: not in the store's count.
					if err := u.CreateMessage(name, nil, time.Now(), bytes.NewBufferString("Subject: late\r\n\r\nbody\r\n"), nil); err != nil {
						t.Fatal(err)
					}
					mbox.Close()
				}
				u.Logout()
			}
			items := []imap.StatusItem{imap.StatusMessages, imap.StatusRecent, imap.StatusUidNext,
				imap.StatusUidValidity, imap.StatusUnseen}
			for _, acct := range accounts {
				u, err := store.GetIMAPAcct(acct)
				if err != nil {
					t.Fatal(err)
				}
				for _, req := range [][]imap.StatusItem{items, {imap.StatusMessages, imap.StatusUidNext, imap.StatusUnseen}} {
					got, err := batch(u, req)
					if err != nil {
						t.Fatal(err)
					}
					infos, err := u.ListMailboxes(false)
					if err != nil {
						t.Fatal(err)
					}
					if len(got) != len(infos) {
						t.Errorf("%s: batch returned %d mailboxes, the account has %d", acct, len(got), len(infos))
					}
					nonzero := map[imap.StatusItem]bool{}
					for _, info := range infos {
						want, err := u.Status(info.Name, req)
						if err != nil {
							t.Fatal(err)
						}
						g := got[info.Name]
						if g == nil {
							t.Errorf("%s: batch has no %q", acct, info.Name)
							continue
						}
						if fmt.Sprint(g.Items) != fmt.Sprint(want.Items) || g.Messages != want.Messages || g.Recent != want.Recent ||
							g.UidNext != want.UidNext || g.UidValidity != want.UidValidity || g.Unseen != want.Unseen {
							t.Errorf("%s %q %v: batch %v, Status %v", acct, info.Name, req, mapping.StatusOf(g), mapping.StatusOf(want))
						}
						if want.Messages != 0 {
							nonzero[imap.StatusMessages] = true
						}
						if want.Unseen != 0 && want.Unseen != want.Messages {
							nonzero[imap.StatusUnseen] = true
						}
						if want.Recent != 0 && want.Recent != want.Messages {
							nonzero[imap.StatusRecent] = true
						}
						if want.UidNext != want.Messages+1 {
							nonzero[imap.StatusUidNext] = true // expunged messages
						}
					}
					if len(req) == len(items) && len(nonzero) != 4 {
						t.Errorf("%s: the contents do not vary enough: %v", acct, nonzero)
					}
				}
				u.Logout()
			}
		})
	}
}

// nopConn is a connection that takes the store's updates and drops them:
// with it, GetMailbox selects the mailbox as a session does.
type nopConn struct{}

func (nopConn) SendUpdate(backend.Update) error { return nil }
