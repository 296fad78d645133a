// SPDX-License-Identifier: GPL-3.0-or-later

package notify

// This file holds every reach of the module past maddy's and go-imap-sql's
// public API: each is one small function that reads or calls by
// reflection, or reads go-imap-sql's tables, refuses a shape it does not
// know, and has a test that fails loudly when maddy or go-imap-sql change
// it (module_test.go, delivery_test.go, batch_test.go).

import (
	"database/sql"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	imapsql "github.com/foxcpp/go-imap-sql"

	"github.com/maddy-notify/maddy-notify/registry"
)

// pipeMode mirrors maddy's internal updatepipe.BackendMode values.
type pipeMode int

const (
	pipeReplicate pipeMode = 0 // updatepipe.ModeReplicate: send and receive
	pipePush      pipeMode = 1 // updatepipe.ModePush: send only (CLI)
)

// updatePipeModeType is the parameter type EnableUpdatePipe must take.
const (
	updatePipePkg      = "github.com/foxcpp/maddy/internal/updatepipe"
	updatePipeModeName = "BackendMode"
)

var errorType = reflect.TypeOf((*error)(nil)).Elem()

// enableUpdatePipe calls inner.EnableUpdatePipe(mode) and reports whether
// inner has that method.
//
// maddy's IMAP endpoint and CLI switch on a storage's update pipe (which
// carries EXISTS/EXPUNGE/FLAGS between processes and instances) only on the
// storage they are given, through updatepipe.Backend, whose parameter type
// lives in maddy's internal/updatepipe and so cannot be named here. The
// endpoint is given this wrapper, so the wrapper switches the pipe on for
// the inner storage by reflection. If maddy changes the method's shape the
// call fails with an error instead of guessing; TestInnerUpdatePipeShape
// fails loudly in that case.
func enableUpdatePipe(inner interface{}, mode pipeMode) (found bool, err error) {
	m := reflect.ValueOf(inner).MethodByName("EnableUpdatePipe")
	if !m.IsValid() {
		return false, nil
	}
	t := m.Type()
	if t.NumIn() != 1 || t.NumOut() != 1 || t.Out(0) != errorType ||
		t.In(0).PkgPath() != updatePipePkg || t.In(0).Name() != updatePipeModeName ||
		t.In(0).Kind() != reflect.Int {
		return true, fmt.Errorf("notify: %T.EnableUpdatePipe has an unsupported signature %v", inner, t)
	}
	arg := reflect.New(t.In(0)).Elem()
	arg.SetInt(int64(mode))
	out := m.Call([]reflect.Value{arg})
	if e, _ := out[0].Interface().(error); e != nil {
		return true, fmt.Errorf("notify: enable update pipe of %T: %w", inner, e)
	}
	return true, nil
}

// innerSQL reads the driver and DSN of a storage.imapsql block, for the
// broker's default DSN (`broker postgres` without one). maddy keeps them in
// unexported fields of its internal type; reflection may read them. If
// maddy renames them, ok is false and `broker postgres` asks for a DSN;
// TestInnerSQLShape fails loudly in that case.
func innerSQL(inner interface{}) (driver, dsn string, ok bool) {
	v := reflect.ValueOf(inner)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return "", "", false
	}
	v = v.Elem()
	if v.Type().PkgPath() != "github.com/foxcpp/maddy/internal/storage/imapsql" {
		return "", "", false
	}
	d, ds := v.FieldByName("driver"), v.FieldByName("dsn")
	if d.Kind() != reflect.String || ds.Kind() != reflect.Slice || ds.Type().Elem().Kind() != reflect.String {
		return "", "", false
	}
	parts := make([]string, ds.Len())
	for i := range parts {
		parts[i] = ds.Index(i).String()
	}
	return d.String(), strings.Join(parts, " "), true
}

// deliveryTarget is one message a delivery adds: the account and the
// mailbox it is filed into.
type deliveryTarget struct {
	account, mailbox string
}

// Where the inner store keeps a delivery's target mailboxes.
const (
	imapsqlModPkg  = "github.com/foxcpp/maddy/internal/storage/imapsql"
	goImapSQLPkg   = "github.com/foxcpp/go-imap-sql"
	goImapSQLDeliv = "Delivery"
	goImapSQLMbox  = "Mailbox"
)

// deliveryTargets reads, from a delivery of storage.imapsql whose body has
// been stored (after Body or BodyNonAtomic, before Commit, which forgets
// them), the account and mailbox of every message it will commit: where
// delivery_map, imap_filter or quarantine (the Junk mailbox) filed it.
//
// maddy tells a storage wrapper none of this: its delivery type is
// internal and keeps go-imap-sql's Delivery in an unexported field, and
// go-imap-sql keeps the resolved mailboxes (name and user) unexported too.
// Reflection may read them: the path is maddy's *imapsql.delivery, field
// d (go-imap-sql's Delivery), field mboxes ([]Mailbox), each with name and
// user.username. Anything else (another store, a changed shape) gives
// ok=false, and the caller reconciles the recipients' accounts instead;
// TestDeliveryTargetsShape fails loudly if maddy or go-imap-sql change it.
func deliveryTargets(d interface{}) (targets []deliveryTarget, ok bool) {
	v := reflect.ValueOf(d)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil, false
	}
	v = v.Elem()
	if v.Type().PkgPath() != imapsqlModPkg || v.Type().Name() != "delivery" {
		return nil, false
	}
	inner := v.FieldByName("d")
	if inner.Kind() != reflect.Struct || inner.Type().PkgPath() != goImapSQLPkg || inner.Type().Name() != goImapSQLDeliv {
		return nil, false
	}
	mboxes := inner.FieldByName("mboxes")
	if mboxes.Kind() != reflect.Slice || mboxes.Type().Elem().Kind() != reflect.Struct ||
		mboxes.Type().Elem().PkgPath() != goImapSQLPkg || mboxes.Type().Elem().Name() != goImapSQLMbox {
		return nil, false
	}
	for i := 0; i < mboxes.Len(); i++ {
		m := mboxes.Index(i)
		name := m.FieldByName("name")
		user := m.FieldByName("user")
		if name.Kind() != reflect.String || user.Kind() != reflect.Struct {
			return nil, false
		}
		username := user.FieldByName("username")
		if username.Kind() != reflect.String {
			return nil, false
		}
		t := deliveryTarget{account: username.String(), mailbox: name.String()}
		if t.account == "" || t.mailbox == "" {
			return nil, false
		}
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	return targets, true
}

// batchSchemaVersion is the go-imap-sql database schema innerBatchStatus's
// query is written for (imapsql.SchemaVersion); TestBatchStatusSchema fails
// loudly when go-imap-sql moves on.
const batchSchemaVersion = 6

// innerBatchStatus returns a registry.BatchStatus that reads the STATUS of
// every mailbox of an account of storage.imapsql with one SQL query, or
// nil when inner is not storage.imapsql on SQLite or PostgreSQL with the
// schema the query knows.
//
// go-imap-sql offers STATUS one mailbox at a time (a transaction and a
// query per item), which costs seconds for an account with 10,000 folders.
// Its Backend and Backend.DB are public, but the tables are its own: the
// query below repeats what User.Status reads (mboxes.msgsCount, uidnext
// and uidvalidity; the msgs rows with seen = 0 or recent = 1) for all the
// account's mailboxes at once. maddy keeps the Backend in the exported
// field Back of its internal type, read by reflection.
// TestBatchStatusMatches holds it equal to User.Status on both databases.
func innerBatchStatus(inner interface{}) registry.BatchStatus {
	driver, _, ok := innerSQL(inner)
	if !ok || (driver != "sqlite3" && driver != "postgres") || imapsql.SchemaVersion != batchSchemaVersion {
		return nil
	}
	f := reflect.ValueOf(inner).Elem().FieldByName("Back")
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	back, ok := f.Interface().(*imapsql.Backend)
	if !ok || back == nil || back.DB == nil {
		return nil
	}
	var version int
	if err := back.DB.QueryRow(`SELECT version FROM schema_version`).Scan(&version); err != nil || version != batchSchemaVersion {
		return nil
	}
	param := "?"
	if driver == "postgres" {
		param = "$1"
	}
	return func(user backend.User, items []imap.StatusItem) (map[string]*imap.MailboxStatus, error) {
		return batchStatus(back.DB, param, user.Username(), items)
	}
}

// batchStatus runs the query of innerBatchStatus for the account username;
// param is the driver's placeholder.
func batchStatus(db *sql.DB, param, username string, items []imap.StatusItem) (map[string]*imap.MailboxStatus, error) {
	var unseen, recent bool
	for _, it := range items {
		switch it {
		case imap.StatusMessages, imap.StatusUidNext, imap.StatusUidValidity:
		case imap.StatusUnseen:
			unseen = true
		case imap.StatusRecent:
			recent = true
		default:
			return nil, fmt.Errorf("notify: batch STATUS cannot read %s", it)
		}
	}
	cols := "mboxes.name, mboxes.msgsCount, mboxes.uidnext, mboxes.uidvalidity"
	if unseen {
		cols += ", (SELECT count(*) FROM msgs WHERE msgs.mboxId = mboxes.id AND msgs.seen = 0)"
	} else {
		cols += ", 0"
	}
	if recent {
		cols += ", (SELECT count(*) FROM msgs WHERE msgs.mboxId = mboxes.id AND msgs.recent = 1)"
	} else {
		cols += ", 0"
	}
	rows, err := db.Query(`SELECT `+cols+` FROM mboxes JOIN users ON users.id = mboxes.uid WHERE users.username = `+param, username)
	if err != nil {
		return nil, fmt.Errorf("notify: batch STATUS: %w", err)
	}
	defer rows.Close()
	out := map[string]*imap.MailboxStatus{}
	for rows.Next() {
		var name string
		var messages, uidNext, uidValidity, unseenN, recentN int64
		if err := rows.Scan(&name, &messages, &uidNext, &uidValidity, &unseenN, &recentN); err != nil {
			return nil, fmt.Errorf("notify: batch STATUS: %w", err)
		}
		st := imap.NewMailboxStatus(name, items)
		for _, it := range items {
			switch it {
			case imap.StatusMessages:
				st.Messages = uint32(messages)
			case imap.StatusUidNext:
				st.UidNext = uint32(uidNext)
			case imap.StatusUidValidity:
				st.UidValidity = uint32(uidValidity)
			case imap.StatusUnseen:
				st.Unseen = uint32(unseenN)
			case imap.StatusRecent:
				st.Recent = uint32(recentN)
			}
		}
		out[name] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("notify: batch STATUS: %w", err)
	}
	return out, nil
}
