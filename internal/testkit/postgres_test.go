// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestPostgres: the database is fresh, usable through the returned DSN, and
// gone after the test even while a client still holds a connection to it.
func TestPostgres(t *testing.T) {
	var dsn string
	var held *sql.DB
	t.Run("fresh", func(t *testing.T) {
		dsn = Postgres(t)
		name := PostgresDBName(dsn)
		if !strings.HasPrefix(name, "notify_test_") || len(name) != len("notify_test_")+16 {
			t.Fatalf("DSN %q: dbname %q, want notify_test_ and 16 hex digits", dsn, name)
		}
		db, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		held = db
		var current string
		var tables int
		if err := db.QueryRow("SELECT current_database(), (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')").
			Scan(&current, &tables); err != nil {
			t.Fatalf("query through %q: %v", dsn, err)
		}
		if current != name || tables != 0 {
			t.Errorf("connected to %q with %d tables, want %q with none", current, tables, name)
		}
		if _, err := db.Exec("CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
		if dsn2 := Postgres(t); PostgresDBName(dsn2) == name {
			t.Errorf("two calls returned the same database %q", name)
		}
		// held stays open: the cleanup must terminate its connection.
	})
	if held != nil {
		defer held.Close()
	}
	if dsn == "" || t.Failed() {
		t.Skip("no database was created (see the subtest)")
	}

	admin, err := sql.Open("postgres", strings.Replace(dsn, "dbname="+PostgresDBName(dsn), "dbname=postgres", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var n int
	if err := admin.QueryRowContext(context.Background(),
		"SELECT count(*) FROM pg_database WHERE datname = $1", PostgresDBName(dsn)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after the test", PostgresDBName(dsn))
	}
}

// TestPostgresUnreachable: without a server the test is skipped with
// directions, or fails when $CI is true.
func TestPostgresUnreachable(t *testing.T) {
	t.Setenv(PostgresEnv, "host=127.0.0.1 port=1 user=postgres sslmode=disable connect_timeout=1")
	for _, ci := range []string{"", "false", "true"} {
		t.Run(fmt.Sprintf("CI=%q", ci), func(t *testing.T) {
			t.Setenv(CIEnv, ci)
			st := &skipTB{fakeTB: &fakeTB{}}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Postgres(st)
				st.Errorf("Postgres returned")
			}()
			<-done
			if ci == "true" {
				if !st.failed || st.skipped || !strings.Contains(st.msg, "PostgreSQL unreachable") || !strings.Contains(st.msg, PostgresEnv) {
					t.Errorf("failed=%v skipped=%v msg=%q, want a failure naming $%s", st.failed, st.skipped, st.msg, PostgresEnv)
				}
				return
			}
			if st.failed || !st.skipped || !strings.Contains(st.skipMsg, "to run this test") || !strings.Contains(st.skipMsg, PostgresEnv) {
				t.Errorf("failed=%v (%q) skipped=%v msg=%q, want a skip that says how to run the test",
					st.failed, st.msg, st.skipped, st.skipMsg)
			}
		})
	}
}

// skipTB is a fakeTB that also records Skipf, which ends the goroutine as
// testing.T's does.
type skipTB struct {
	*fakeTB
	skipped bool
	skipMsg string
}

func (s *skipTB) Skipf(format string, args ...any) {
	s.mu.Lock()
	s.skipped, s.skipMsg = true, fmt.Sprintf(format, args...)
	s.mu.Unlock()
	runtime.Goexit()
}
