// SPDX-License-Identifier: GPL-3.0-or-later

package testkit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

const (
	// PostgresEnv names the environment variable with the lib/pq
	// key=value DSN of the PostgreSQL server on which Postgres creates its
	// databases (without dbname; a dbname in it is ignored).
	PostgresEnv = "NOTIFY_TEST_PG"

	// DefaultPostgres is the server Postgres uses when $NOTIFY_TEST_PG is
	// unset: a local PostgreSQL with trust authentication for postgres.
	DefaultPostgres = "host=127.0.0.1 port=5432 user=postgres sslmode=disable"

	// CIEnv names the environment variable that turns a missing PostgreSQL
	// from a skipped test into a failed one when it is "true".
	CIEnv = "CI"

	// PostgresTimeout bounds each statement Postgres runs on the server
	// (connecting included).
	PostgresTimeout = 10 * time.Second
)

// Postgres creates a fresh database named notify_test_<16 hex digits> on the
// PostgreSQL server of $NOTIFY_TEST_PG (DefaultPostgres if unset) and returns
// its lib/pq DSN in key=value form: the server DSN plus dbname=NAME, usable
// as it is after `dsn` in maddy.conf.
//
// A cleanup registered by Postgres terminates the database's remaining
// backends and drops it; register it before starting anything that connects
// (testkit.Start), so that it runs after those have stopped. A database that
// cannot be dropped fails the test.
//
// If the server cannot be reached, Postgres skips the test with a message
// that says how to run it, or fails it when $CI is "true" (CI must not pass
// by skipping). A server that answers but refuses (authentication,
// permissions) always fails the test.
//
// Postgres must be called from the test's goroutine.
func Postgres(t testing.TB) string {
	t.Helper()
	server := os.Getenv(PostgresEnv)
	if server == "" {
		server = DefaultPostgres
	}
	// In lib/pq's key=value form a later key wins: dbname=postgres
	// connects to the maintenance database whatever server says.
	admin, err := sql.Open("postgres", server+" dbname=postgres")
	if err != nil {
		t.Fatalf("testkit: $%s=%q: %v", PostgresEnv, server, err)
	}
	admin.SetMaxOpenConns(1)

	ctx, cancel := context.WithTimeout(context.Background(), PostgresTimeout)
	err = admin.PingContext(ctx)
	cancel()
	if err != nil {
		admin.Close()
		var pqErr *pq.Error
		if errors.As(err, &pqErr) {
			t.Fatalf("testkit: PostgreSQL at %q answered but refused: %v", server, err)
		}
		how := "start PostgreSQL on 127.0.0.1:5432 with trust authentication for user postgres, " +
			"or point $" + PostgresEnv + " at a server (lib/pq DSN without dbname, e.g. " +
			"NOTIFY_TEST_PG='host=db port=5432 user=postgres sslmode=disable'); the user must be allowed to CREATE DATABASE"
		if os.Getenv(CIEnv) == "true" {
			t.Fatalf("testkit: PostgreSQL unreachable at %q with $%s=true: %v\n%s", server, CIEnv, err, how)
		}
		t.Skipf("testkit: PostgreSQL unreachable at %q (%v); to run this test, %s", server, err, how)
	}

	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		admin.Close()
		t.Fatalf("testkit: %v", err)
	}
	name := "notify_test_" + hex.EncodeToString(rnd[:])
	ctx, cancel = context.WithTimeout(context.Background(), PostgresTimeout)
	_, err = admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
	cancel()
	if err != nil {
		admin.Close()
		t.Fatalf("testkit: create database %s on %q: %v", name, server, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if err := dropDatabase(admin, name); err != nil {
			t.Errorf("testkit: drop database %s on %q: %v", name, server, err)
		}
	})
	return server + " dbname=" + name
}

// dropDatabase terminates the backends connected to name and drops it. A
// client that reconnects between the two (lib/pq's listeners do) makes DROP
// fail with "is being accessed by other users"; dropDatabase then tries
// again, for PostgresTimeout at most.
func dropDatabase(admin *sql.DB, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), PostgresTimeout)
	defer cancel()
	for {
		_, err := admin.ExecContext(ctx,
			"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
		if err == nil {
			_, err = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name))
		}
		if err == nil {
			return nil
		}
		var pqErr *pq.Error
		// 55006 object_in_use: a backend connected again in between.
		if !errors.As(err, &pqErr) || pqErr.Code != "55006" || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PostgresDBName returns the dbname of a key=value DSN as Postgres returns
// it (the last dbname=), or "" if there is none. Values with spaces or
// quotes are not supported.
func PostgresDBName(dsn string) string {
	name := ""
	for _, kv := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(kv, "dbname="); ok {
			name = v
		}
	}
	return name
}
