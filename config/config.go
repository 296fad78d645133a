// SPDX-License-Identifier: GPL-3.0-or-later

// Package config turns a storage.notify configuration block into one
// Settings value: it declares every directive on maddy's config.Map, with
// its default, parses it and checks it. Errors name the directive and,
// where maddy knows them, the file and line (config.NodeErr).
//
// A new directive is added here (and documented in
// docs/reference/storage/notify.md, which a test keeps equal to the
// declared list); the module root only wires the Settings.
//
// Of this module, config depends on mapping and event only (imports_test.go
// holds it): it must not import hooks, registry, bus or the module root.
// Of maddy it uses the configuration packages and framework/module (for
// the storage it wraps).
package config

import (
	"fmt"
	"sort"
	"strings"
	"time"

	maddycfg "github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/mapping"
)

// Defaults of the directives that are not part of mapping.Policy.
const (
	// DefaultStallTimeout: see the stall_timeout directive.
	DefaultStallTimeout = 2 * time.Second
	// MinStallTimeout is the smallest stall_timeout accepted: below it a
	// client on a slow link is disconnected for an ordinary burst.
	MinStallTimeout = 100 * time.Millisecond
	// DefaultIdleKeepalive is how often an idling client that was written
	// nothing is written "* OK Still here" (Dovecot's
	// imap_idle_notify_interval has the same default).
	DefaultIdleKeepalive = 2 * time.Minute
	// MinIdleKeepalive is the smallest idle_keepalive other than 0.
	MinIdleKeepalive = time.Second
)

// Broker says how events reach other maddy instances.
type Broker struct {
	// Postgres: PostgreSQL LISTEN/NOTIFY; otherwise this instance only.
	Postgres bool
	// DSN is the broker's connection string; "" with Postgres means the
	// wrapped storage.imapsql's own (the module resolves it).
	DSN string
}

// Settings is one parsed storage.notify block.
type Settings struct {
	// Inner is the wrapped storage.
	Inner module.Storage
	// Policy is what sessions are told (events, status_mailboxes,
	// status_items, new_message_fetch, plain_clients).
	Policy mapping.Policy
	// Broker is the broker directive.
	Broker Broker
	// StallTimeout bounds the store's write to a client that does not read.
	StallTimeout time.Duration
	// IdleKeepalive is the keepalive interval of idling clients; 0: none.
	IdleKeepalive time.Duration
	// Debug logs per-event detail.
	Debug bool
}

// Parse declares the directives of a storage.notify block on cfg,
// processes it once and returns the settings. self is the block being
// configured: a block that wraps itself is refused.
func Parse(cfg *maddycfg.Map, self module.Storage) (Settings, error) {
	var (
		s      Settings
		p      = mapping.DefaultPolicy()
		scopes = map[string]mapping.MailboxScope{}
	)
	for _, sc := range []mapping.MailboxScope{mapping.AllMailboxes, mapping.SubscribedMailboxes, mapping.Inboxes, mapping.NoMailboxes} {
		scopes[sc.String()] = sc
	}
	cfg.Custom("storage", false, true, nil, storageDirective(self), &s.Inner)
	list(cfg, "events", p.Events, mapping.ParseKinds, &p.Events)
	enum(cfg, "status_mailboxes", scopes, p.StatusMailboxes, &p.StatusMailboxes)
	list(cfg, "status_items", p.StatusItems, mapping.ParseStatusItems, &p.StatusItems)
	// Without arguments: no FETCH of new messages.
	list(cfg, "new_message_fetch", p.FetchItems, mapping.ParseFetchItems, &p.FetchItems)
	enum(cfg, "plain_clients", mapping.PlainClientsValues(), p.Plain, &p.Plain)
	list(cfg, "broker", Broker{}, parseBroker, &s.Broker)
	cfg.Custom("stall_timeout", false, false, func() (interface{}, error) {
		return DefaultStallTimeout, nil
	}, durationDirective("stall_timeout", MinStallTimeout, false), &s.StallTimeout)
	cfg.Custom("idle_keepalive", false, false, func() (interface{}, error) {
		return DefaultIdleKeepalive, nil
	}, durationDirective("idle_keepalive", MinIdleKeepalive, true), &s.IdleKeepalive)
	cfg.Bool("debug", true, false, &s.Debug)
	if _, err := cfg.Process(); err != nil {
		return s, err
	}
	s.Policy = p
	return s, nil
}

// list declares a directive whose arguments parse decides; its errors
// are given the directive's name, file and line.
func list[V any](cfg *maddycfg.Map, name string, def V, parse func([]string) (V, error), store *V) {
	cfg.Custom(name, false, false, func() (interface{}, error) {
		return def, nil
	}, func(_ *maddycfg.Map, node maddycfg.Node) (interface{}, error) {
		if len(node.Children) != 0 {
			return nil, maddycfg.NodeErr(node, "%s: can't declare a block here", name)
		}
		v, err := parse(node.Args)
		if err != nil {
			return nil, maddycfg.NodeErr(node, "%s: %v", name, err)
		}
		return v, nil
	}, store)
}

// enum declares a directive that takes one of the names of values.
// maddy's config.EnumMapped names neither the directive nor the values in
// a stable order; this says both.
func enum[V any](cfg *maddycfg.Map, name string, values map[string]V, def V, store *V) {
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	cfg.Custom(name, false, false, func() (interface{}, error) {
		return def, nil
	}, func(_ *maddycfg.Map, node maddycfg.Node) (interface{}, error) {
		if len(node.Children) != 0 {
			return nil, maddycfg.NodeErr(node, "%s: can't declare a block here", name)
		}
		if len(node.Args) != 1 {
			return nil, maddycfg.NodeErr(node, "%s: expected one of %s", name, strings.Join(names, ", "))
		}
		v, ok := values[strings.ToLower(node.Args[0])]
		if !ok {
			return nil, maddycfg.NodeErr(node, "%s: unknown value %q, expected one of %s", name, node.Args[0], strings.Join(names, ", "))
		}
		return v, nil
	}, store)
}

// durationDirective parses `name DURATION`, at least min; with zeroOff,
// 0 is accepted too (the feature is off).
func durationDirective(name string, min time.Duration, zeroOff bool) func(*maddycfg.Map, maddycfg.Node) (interface{}, error) {
	return func(_ *maddycfg.Map, node maddycfg.Node) (interface{}, error) {
		if len(node.Children) != 0 {
			return nil, maddycfg.NodeErr(node, "%s: can't declare a block here", name)
		}
		if len(node.Args) != 1 {
			return nil, maddycfg.NodeErr(node, "%s: exactly one duration is expected, e.g. %v", name, min*20)
		}
		if zeroOff && node.Args[0] == "0" {
			return time.Duration(0), nil
		}
		d, err := time.ParseDuration(node.Args[0])
		if err != nil {
			return nil, maddycfg.NodeErr(node, "%s: %v", name, err)
		}
		if zeroOff && d == 0 {
			return d, nil
		}
		if d < min {
			off := ""
			if zeroOff {
				off = " (0 turns it off)"
			}
			return nil, maddycfg.NodeErr(node, "%s: %v is less than the minimum, %v%s", name, d, min, off)
		}
		return d, nil
	}
}

// storageDirective maps `storage &NAME` (or an inline storage block) to
// the inner module.Storage.
func storageDirective(self module.Storage) func(*maddycfg.Map, maddycfg.Node) (interface{}, error) {
	return func(m *maddycfg.Map, node maddycfg.Node) (interface{}, error) {
		var inner module.Storage
		if err := modconfig.ModuleFromNode("storage", node.Args, node, m.Globals, &inner); err != nil {
			// maddy's errors carry the location for some failures and
			// not for others; say it once, with the directive.
			where := fmt.Sprintf("%s:%d: ", node.File, node.Line)
			return nil, fmt.Errorf("%sstorage %s: %w", where, strings.Join(node.Args, " "),
				trimmedErr{err, strings.TrimPrefix(err.Error(), where)})
		}
		if inner == self {
			return nil, maddycfg.NodeErr(node, "storage: a storage.notify block cannot wrap itself")
		}
		return inner, nil
	}
}

// trimmedErr is err with its message shortened by a location prefix that
// the wrapping error already gives.
type trimmedErr struct {
	err error
	msg string
}

func (e trimmedErr) Error() string { return e.msg }
func (e trimmedErr) Unwrap() error { return e.err }

// parseBroker checks `broker none` and `broker postgres [DSN]`.
func parseBroker(args []string) (Broker, error) {
	switch {
	case len(args) == 1 && args[0] == "none":
		return Broker{}, nil
	case len(args) >= 1 && args[0] == "postgres":
		return Broker{Postgres: true, DSN: strings.Join(args[1:], " ")}, nil
	}
	return Broker{}, fmt.Errorf("expected none or postgres [DSN], got %q", strings.Join(args, " "))
}
