// SPDX-License-Identifier: GPL-3.0-or-later

// Package notify is the maddy module storage.notify: a storage that wraps
// another maddy storage (in practice storage.imapsql) and forwards to it
// everything maddy, its IMAP server and its CLI look for on a storage, so
// that clients see exactly what the inner store gives them.
//
// Link it into a maddy binary with a blank import (cmd/maddy-build does
// that) and configure it as
//
//	storage.notify NAME {
//	    storage &INNER
//	}
//
// The module owns its configuration, the forwarding of storage-level
// interfaces and the inner store's update pipe; users and mailboxes are
// decorated by package hooks.
package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap"
	sortthread "github.com/emersion/go-imap-sortthread"
	"github.com/emersion/go-imap/backend"
	imapserver "github.com/emersion/go-imap/server"
	i18nlevel "github.com/foxcpp/go-imap-i18nlevel"
	"github.com/foxcpp/maddy/framework/config"
	modconfig "github.com/foxcpp/maddy/framework/config/module"
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/bus"
	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/hooks"
	"github.com/maddy-notify/maddy-notify/mapping"
	"github.com/maddy-notify/maddy-notify/metrics"
	"github.com/maddy-notify/maddy-notify/registry"
)

// ModName is the name the module is registered under in maddy.
const ModName = "storage.notify"

// Store is one storage.notify configuration block.
//
// New only records its arguments; Init reads the configuration and must
// succeed before any other method is called. After Init the methods may be
// called from any goroutine, as maddy does.
type Store struct {
	instName string
	log      log.Logger

	inner      module.Storage
	closeInner sync.Once

	policy mapping.Policy
	// reg and bus are nil in maddy's CLI (module.NoRun): there is nobody
	// to notify.
	reg    *registry.Registry
	bus    bus.Bus
	broker []string
	// stall is how long the store's write to a client may wait before the
	// client is disconnected (stall_timeout; hooks.DefaultStallTimeout).
	stall  time.Duration
	lastID atomic.Uint64
}

var (
	_ module.Storage             = (*Store)(nil)
	_ module.ManageableStorage   = (*Store)(nil)
	_ module.DeliveryTarget      = (*Store)(nil)
	_ module.Table               = (*Store)(nil)
	_ backend.Backend            = (*Store)(nil)
	_ backend.AppendLimitBackend = (*Store)(nil)
	_ sortthread.ThreadBackend   = (*Store)(nil)
	_ i18nlevel.Backend          = (*Store)(nil)

	// What the custom build's patched IMAP endpoint looks for.
	_ interface {
		IMAPServerExtensions() []imapserver.Extension
	} = (*Store)(nil)
)

// New creates an uninitialised storage.notify instance. It is maddy's
// module constructor and takes no inline arguments.
func New(modName, instName string, _, inlineArgs []string) (module.Module, error) {
	if len(inlineArgs) != 0 {
		return nil, fmt.Errorf("notify: %s takes no inline arguments, use a block with the storage directive", modName)
	}
	return &Store{
		instName: instName,
		log:      log.Logger{Name: ModName},
	}, nil
}

// Name returns the module name.
func (s *Store) Name() string { return ModName }

// InstanceName returns the name of the configuration block.
func (s *Store) InstanceName() string { return s.instName }

// Init reads the configuration block. Errors name the block and, through
// maddy's config package, the directive with its file and line.
func (s *Store) Init(cfg *config.Map) error {
	var (
		events, statusMailboxes, statusItems, fetchItems []string
		defaults                                         = mapping.DefaultPolicy()
	)
	cfg.Custom("storage", false, true, nil, s.storageDirective, &s.inner)
	cfg.StringList("events", false, false, kindNames(defaults.Events), &events)
	cfg.StringList("status_mailboxes", false, false, []string{defaults.StatusMailboxes.String()}, &statusMailboxes)
	cfg.StringList("status_items", false, false, defaults.StatusItems, &statusItems)
	cfg.Custom("new_message_fetch", false, false, func() (interface{}, error) {
		return []string(defaults.FetchItems), nil
	}, func(_ *config.Map, node config.Node) (interface{}, error) {
		return node.Args, nil // no arguments: no FETCH
	}, &fetchItems)
	cfg.StringList("broker", false, false, []string{"none"}, &s.broker)
	cfg.Custom("stall_timeout", false, false, func() (interface{}, error) {
		return hooks.DefaultStallTimeout, nil
	}, stallTimeoutDirective, &s.stall)
	cfg.Bool("debug", true, false, &s.log.Debug)
	if _, err := cfg.Process(); err != nil {
		return s.configErr(err)
	}
	brokerDSN, err := s.brokerDSN()
	if err != nil {
		return s.configErr(err)
	}
	policy, err := parsePolicy(events, statusMailboxes, statusItems, fetchItems)
	if err != nil {
		return s.configErr(err)
	}
	s.policy = policy

	if err := s.enableInnerPipe(); err != nil {
		s.log.Error("failed to enable the update pipe of the wrapped storage; changes made by other processes will not reach IDLE sessions", err,
			"storage", instanceName(s.inner))
	}
	if !module.NoRun {
		m := metrics.For(s.instName)
		s.reg = registry.New(s.policy, s.inner.GetIMAPAcct, s.log)
		s.reg.SetMetrics(m)
		var b bus.Bus = bus.Local{Sink: s.reg}
		if brokerDSN != "" {
			pg, err := bus.NewPostgres(bus.Options{DSN: brokerDSN, Metrics: m}, s.reg,
				log.Logger{Name: ModName + "/broker", Debug: s.log.Debug})
			if err != nil {
				s.reg.Close()
				return s.configErr(fmt.Errorf("broker: %w", err))
			}
			b = pg
		}
		s.bus = countingBus{Bus: b, metrics: m}
	}
	broker := "none"
	if brokerDSN != "" {
		broker = "postgres" // not the DSN: it may hold a password
	}
	s.log.Msg("notifications configured", "storage", instanceName(s.inner),
		"events", s.policy.Events.String(), "status_mailboxes", s.policy.StatusMailboxes.String(),
		"status_items", strings.Join(s.policy.StatusItems, " "), "new_message_fetch", strings.Join(s.policy.FetchItems, " "),
		"broker", broker, "stall_timeout", s.stall.String())
	return nil
}

// countingBus counts what the module publishes.
type countingBus struct {
	bus.Bus
	metrics *metrics.Set
}

func (b countingBus) Publish(ev event.Event) {
	b.metrics.Published(ev.Kind.String())
	b.Bus.Publish(ev)
}

func (b countingBus) Reconcile(account string) {
	b.metrics.Published("Reconcile")
	b.Bus.Reconcile(account)
}

// brokerDSN checks the broker directive and returns the PostgreSQL DSN of
// the broker, "" for none. `broker postgres` without a DSN uses the inner
// storage.imapsql's DSN when its driver is postgres.
func (s *Store) brokerDSN() (string, error) {
	switch {
	case len(s.broker) == 1 && s.broker[0] == "none":
		return "", nil
	case len(s.broker) >= 1 && s.broker[0] == "postgres":
		if len(s.broker) > 1 {
			return strings.Join(s.broker[1:], " "), nil
		}
		driver, dsn, ok := innerSQL(s.inner)
		if !ok || driver != "postgres" {
			return "", fmt.Errorf("broker: postgres needs a DSN (the wrapped storage %s is not storage.imapsql with driver postgres)", instanceName(s.inner))
		}
		return dsn, nil
	}
	return "", fmt.Errorf("broker: expected none or postgres [DSN], got %q", strings.Join(s.broker, " "))
}

func kindNames(set mapping.KindSet) []string {
	var names []string
	for _, k := range set.Kinds() {
		names = append(names, k.String())
	}
	return names
}

// parsePolicy checks the policy directives; errors name the directive.
func parsePolicy(events, statusMailboxes, statusItems, fetchItems []string) (mapping.Policy, error) {
	var p mapping.Policy
	var err error
	if p.Events, err = mapping.ParseKinds(events); err != nil {
		return p, fmt.Errorf("events: %w", err)
	}
	if len(statusMailboxes) != 1 {
		return p, fmt.Errorf("status_mailboxes: expected one of all, subscribed, inboxes, none")
	}
	if p.StatusMailboxes, err = mapping.ParseMailboxScope(statusMailboxes[0]); err != nil {
		return p, fmt.Errorf("status_mailboxes: %w", err)
	}
	if p.StatusItems, err = mapping.ParseStatusItems(statusItems); err != nil {
		return p, fmt.Errorf("status_items: %w", err)
	}
	if p.FetchItems, err = mapping.ParseFetchItems(fetchItems); err != nil {
		return p, fmt.Errorf("new_message_fetch: %w", err)
	}
	return p, nil
}

// storageDirective maps `storage &NAME` (or an inline storage block) to the
// inner module.Storage.
func (s *Store) storageDirective(m *config.Map, node config.Node) (interface{}, error) {
	var inner module.Storage
	if err := modconfig.ModuleFromNode("storage", node.Args, node, m.Globals, &inner); err != nil {
		// maddy's errors carry the location for some failures and not for
		// others; say it once, with the directive.
		where := fmt.Sprintf("%s:%d: ", node.File, node.Line)
		return nil, fmt.Errorf("%sstorage %s: %w", where, strings.Join(node.Args, " "),
			trimmedErr{err, strings.TrimPrefix(err.Error(), where)})
	}
	if inner == module.Storage(s) {
		return nil, config.NodeErr(node, "storage: a storage.notify block cannot wrap itself")
	}
	return inner, nil
}

// trimmedErr is err with its message shortened by a location prefix that
// the wrapping error already gives.
type trimmedErr struct {
	err error
	msg string
}

func (e trimmedErr) Error() string { return e.msg }
func (e trimmedErr) Unwrap() error { return e.err }

func (s *Store) configErr(err error) error {
	name := s.instName
	if name == "" {
		name = "(inline)"
	}
	return fmt.Errorf("notify: block %s: %w", name, err)
}

// enableInnerPipe switches on the inner store's update pipe: replicate mode
// in the server, push mode in maddy's CLI (module.NoRun). The CLI finds no
// server socket when the server is not running; that is not an error.
func (s *Store) enableInnerPipe() error {
	mode := pipeReplicate
	if module.NoRun {
		mode = pipePush
	}
	found, err := enableUpdatePipe(s.inner, mode)
	if !found {
		s.log.DebugMsg("the wrapped storage has no update pipe", "storage", instanceName(s.inner))
		return nil
	}
	if mode == pipePush && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func instanceName(m interface{}) string {
	if mod, ok := m.(module.Module); ok {
		return mod.InstanceName()
	}
	return fmt.Sprintf("%T", m)
}

// Close stops what the module started.
//
// In the server it does not close the inner storage: maddy closes every
// configuration block itself, and go-imap-sql does not survive a second
// Close. maddy's CLI (module.NoRun) is different: with --cfg-block naming
// this block it closes only this block, after its shutdown hooks have run,
// so the inner storage would never flush the updates it still has to push
// to the running server (or close its database). There the wrapper closes
// it, once.
func (s *Store) Close() error {
	if s.bus != nil {
		if err := s.bus.Close(); err != nil {
			s.log.Error("broker close failed", err)
		}
	}
	if s.reg != nil {
		s.reg.Close()
	}
	if !module.NoRun {
		return nil
	}
	var err error
	s.closeInner.Do(func() {
		if c, ok := s.inner.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}

// GetOrCreateIMAPAcct returns the decorated account, creating it in the
// inner storage if needed.
func (s *Store) GetOrCreateIMAPAcct(username string) (backend.User, error) {
	u, err := s.inner.GetOrCreateIMAPAcct(username)
	if err != nil {
		return nil, err
	}
	return s.wrapUser(u), nil
}

// GetIMAPAcct returns the decorated account.
func (s *Store) GetIMAPAcct(username string) (backend.User, error) {
	u, err := s.inner.GetIMAPAcct(username)
	if err != nil {
		return nil, err
	}
	return s.wrapUser(u), nil
}

// minStallTimeout is the smallest stall_timeout accepted: below it a
// client on a slow link is disconnected for an ordinary burst.
const minStallTimeout = 100 * time.Millisecond

// stallTimeoutDirective parses `stall_timeout DURATION`.
func stallTimeoutDirective(_ *config.Map, node config.Node) (interface{}, error) {
	if len(node.Children) != 0 {
		return nil, config.NodeErr(node, "stall_timeout: can't declare a block here")
	}
	if len(node.Args) != 1 {
		return nil, config.NodeErr(node, "stall_timeout: exactly one duration is expected, e.g. 2s")
	}
	d, err := time.ParseDuration(node.Args[0])
	if err != nil {
		return nil, config.NodeErr(node, "stall_timeout: %v", err)
	}
	if d < minStallTimeout {
		return nil, config.NodeErr(node, "stall_timeout: %v is less than the minimum, %v", d, minStallTimeout)
	}
	return d, nil
}

// wrapUser decorates u as one login with its own session id.
func (s *Store) wrapUser(u backend.User) *hooks.User {
	if s.reg == nil {
		return hooks.WrapUser(u, nil, nil, s.lastID.Add(1), s.stall)
	}
	return hooks.WrapUser(u, s.reg, s.bus, s.lastID.Add(1), s.stall)
}

// IMAPExtensions returns the inner storage's extensions unchanged.
func (s *Store) IMAPExtensions() []string { return s.inner.IMAPExtensions() }

// IMAPServerExtensions returns the go-imap server extensions the IMAP
// endpoint is to enable for this store. Stock maddy never calls it; the
// custom build's change to maddy's IMAP endpoint (internal/custombuild,
// ServerExtensionsMethod; docs/maddy-changes.md) calls it once, from the
// endpoint's Init, before its listeners start. It returns nil for now:
// NOTIFY (RFC 5465) will be returned here.
func (s *Store) IMAPServerExtensions() []imapserver.Extension { return nil }

func (s *Store) manageable() (module.ManageableStorage, error) {
	m, ok := s.inner.(module.ManageableStorage)
	if !ok {
		return nil, fmt.Errorf("notify: storage %s does not support account management", instanceName(s.inner))
	}
	return m, nil
}

// ListIMAPAccts forwards to the inner storage (maddy imap-acct list).
func (s *Store) ListIMAPAccts() ([]string, error) {
	m, err := s.manageable()
	if err != nil {
		return nil, err
	}
	return m.ListIMAPAccts()
}

// CreateIMAPAcct forwards to the inner storage (maddy imap-acct create).
func (s *Store) CreateIMAPAcct(username string) error {
	m, err := s.manageable()
	if err != nil {
		return err
	}
	return m.CreateIMAPAcct(username)
}

// DeleteIMAPAcct forwards to the inner storage (maddy imap-acct remove).
func (s *Store) DeleteIMAPAcct(username string) error {
	m, err := s.manageable()
	if err != nil {
		return err
	}
	return m.DeleteIMAPAcct(username)
}

// Start begins a delivery into the inner storage (deliver_to &NAME).
func (s *Store) Start(ctx context.Context, msgMeta *module.MsgMetadata, mailFrom string) (module.Delivery, error) {
	t, ok := s.inner.(module.DeliveryTarget)
	if !ok {
		return nil, fmt.Errorf("notify: storage %s is not a delivery target", instanceName(s.inner))
	}
	d, err := t.Start(ctx, msgMeta, mailFrom)
	if err != nil || s.reg == nil {
		return d, err
	}
	return wrapDelivery(d, s.bus), nil
}

// Lookup forwards a table lookup (does the account exist) to the inner
// storage; a storage that is no table knows no key.
func (s *Store) Lookup(ctx context.Context, key string) (string, bool, error) {
	t, ok := s.inner.(module.Table)
	if !ok {
		return "", false, nil
	}
	return t.Lookup(ctx, key)
}

// Login forwards to the inner storage if it is a go-imap backend. maddy
// authenticates in its IMAP endpoint and never calls it; it exists because
// go-imap-sortthread's ThreadBackend embeds backend.Backend.
func (s *Store) Login(connInfo *imap.ConnInfo, username, password string) (backend.User, error) {
	b, ok := s.inner.(backend.Backend)
	if !ok {
		return nil, backend.ErrInvalidCredentials
	}
	u, err := b.Login(connInfo, username, password)
	if err != nil {
		return nil, err
	}
	return s.wrapUser(u), nil
}

// CreateMessageLimit returns the inner storage's append limit, nil if none.
func (s *Store) CreateMessageLimit() *uint32 {
	if l, ok := s.inner.(interface{ CreateMessageLimit() *uint32 }); ok {
		return l.CreateMessageLimit()
	}
	return nil
}

// SupportedThreadAlgorithms forwards to the inner storage (CAPABILITY
// THREAD=...), nil if it has no THREAD support.
func (s *Store) SupportedThreadAlgorithms() []sortthread.ThreadAlgorithm {
	if t, ok := s.inner.(sortthread.ThreadBackend); ok {
		return t.SupportedThreadAlgorithms()
	}
	return nil
}

// I18NLevel forwards to the inner storage (CAPABILITY I18NLEVEL=n), 0 if it
// has none.
func (s *Store) I18NLevel() int {
	if l, ok := s.inner.(i18nlevel.Backend); ok {
		return l.I18NLevel()
	}
	return 0
}

func init() {
	module.Register(ModName, New)
}
