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
	"github.com/foxcpp/maddy/framework/log"
	"github.com/foxcpp/maddy/framework/module"

	"github.com/maddy-notify/maddy-notify/bus"
	notifyconfig "github.com/maddy-notify/maddy-notify/config"
	"github.com/maddy-notify/maddy-notify/event"
	"github.com/maddy-notify/maddy-notify/hooks"
	"github.com/maddy-notify/maddy-notify/imapext"
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
	// reg and bus are nil in maddy's CLI (module.NoRun): there the module
	// has no sessions and hands its events to the running server through
	// cli instead.
	reg *registry.Registry
	bus bus.Bus
	// sock is the server's socket for maddy's CLI (broker none, a named
	// block); nil otherwise.
	sock *bus.SocketListener
	cli  *cliNotifier
	// stall is how long the store's write to a client may wait before the
	// client is disconnected (stall_timeout).
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

// Init reads the configuration block (package config) and wires the
// module: the inner store's update pipe, the registry and the bus. Errors
// name the block and, through maddy's config package, the directive with
// its file and line.
func (s *Store) Init(cfg *config.Map) error {
	set, err := notifyconfig.Parse(cfg, s)
	if err != nil {
		return s.configErr(err)
	}
	s.inner, s.policy, s.stall, s.log.Debug = set.Inner, set.Policy, set.StallTimeout, set.Debug
	brokerDSN, err := s.brokerDSN(set.Broker)
	if err != nil {
		return s.configErr(err)
	}

	pipeOn, err := s.enableInnerPipe()
	if err != nil {
		s.log.Error("failed to enable the update pipe of the wrapped storage; changes made by other processes will not reach IDLE sessions", err,
			"storage", instanceName(s.inner))
	}
	if module.NoRun {
		if err := s.initCLI(brokerDSN, pipeOn); err != nil {
			return s.configErr(err)
		}
		return nil
	}
	if err := s.initServer(set, brokerDSN); err != nil {
		return s.configErr(err)
	}
	broker := "none"
	if brokerDSN != "" {
		broker = "postgres" // not the DSN: it may hold a password
	}
	s.log.Msg("notifications configured", "storage", instanceName(s.inner),
		"events", s.policy.Events.String(), "status_mailboxes", s.policy.StatusMailboxes.String(),
		"status_items", strings.Join(s.policy.StatusItems, " "), "new_message_fetch", strings.Join(s.policy.FetchItems, " "),
		"plain_clients", s.policy.Plain.String(), "broker", broker, "stall_timeout", s.stall.String(),
		"idle_keepalive", set.IdleKeepalive.String())
	return nil
}

// initServer wires the module in the server: the registry, the bus and,
// with broker none, the socket through which maddy's CLI reaches the
// registry (with broker postgres the CLI publishes through the broker).
func (s *Store) initServer(set notifyconfig.Settings, brokerDSN string) error {
	m := metrics.For(s.instName)
	s.reg = registry.New(s.policy, s.inner.GetIMAPAcct, s.log)
	s.reg.SetMetrics(m)
	s.reg.SetBatchStatus(innerBatchStatus(s.inner))
	var b bus.Bus = bus.Local{Sink: s.reg}
	if brokerDSN != "" {
		pg, err := bus.NewPostgres(bus.Options{DSN: brokerDSN, Metrics: m}, s.reg,
			log.Logger{Name: ModName + "/broker", Debug: s.log.Debug})
		if err != nil {
			s.reg.Close()
			return fmt.Errorf("broker: %w", err)
		}
		b = pg
	}
	s.bus = countingBus{Bus: b, metrics: m}
	// An inline block cannot be named by the CLI; without a runtime_dir
	// (the module outside maddy, in tests) there is no place for a socket.
	if brokerDSN == "" && s.instName != "" && config.RuntimeDirectory != "" {
		path := bus.SocketPath(config.RuntimeDirectory, s.instName)
		sock, err := bus.ListenSocket(path, s.reg, log.Logger{Name: ModName + "/cli", Debug: s.log.Debug}, m)
		switch {
		case errors.Is(err, bus.ErrSocketInUse):
			// Two servers would each take the other's CLI events.
			s.bus.Close()
			s.reg.Close()
			return fmt.Errorf("the socket for maddy's CLI: %w", err)
		case err != nil:
			s.log.Error("cannot listen for maddy's CLI; its changes will reach IDLE sessions only through the store's update pipe", err)
		default:
			s.sock = sock
		}
	}
	s.reg.StartKeepalive(set.IdleKeepalive)
	s.hintCLIBlock()
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

// brokerDSN returns the PostgreSQL DSN of the broker, "" for none.
// `broker postgres` without a DSN uses the inner storage.imapsql's DSN when
// its driver is postgres.
func (s *Store) brokerDSN(b notifyconfig.Broker) (string, error) {
	if !b.Postgres || b.DSN != "" {
		return b.DSN, nil
	}
	driver, dsn, ok := innerSQL(s.inner)
	if !ok || driver != "postgres" {
		return "", fmt.Errorf("broker: postgres needs a DSN (the wrapped storage %s is not storage.imapsql with driver postgres)", instanceName(s.inner))
	}
	return dsn, nil
}

func (s *Store) configErr(err error) error {
	name := s.instName
	if name == "" {
		name = "(inline)"
	}
	return fmt.Errorf("notify: block %s: %w", name, err)
}

// enableInnerPipe switches on the inner store's update pipe: replicate mode
// in the server, push mode in maddy's CLI (module.NoRun), and reports
// whether it is on. The CLI finds no server socket when the server is not
// running; that is not an error.
func (s *Store) enableInnerPipe() (on bool, err error) {
	mode := pipeReplicate
	if module.NoRun {
		mode = pipePush
	}
	found, err := enableUpdatePipe(s.inner, mode)
	if !found {
		s.log.DebugMsg("the wrapped storage has no update pipe", "storage", instanceName(s.inner))
		return false, nil
	}
	if mode == pipePush && errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
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
// to the running server (or close its database). There the wrapper first
// hands the running server what is left to tell (a reconcile of the
// accounts whose mailboxes the command opened undecorated; see cli.go),
// then closes the inner storage, once.
func (s *Store) Close() error {
	if s.sock != nil {
		if err := s.sock.Close(); err != nil {
			s.log.Error("closing the socket for maddy's CLI failed", err, "path", s.sock.Path())
		}
	}
	if s.cli != nil {
		s.cli.finish()
	}
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

// wrapUser decorates u as one login with its own session id.
func (s *Store) wrapUser(u backend.User) *hooks.User {
	if s.reg == nil {
		var pub hooks.Publisher
		if s.cli != nil {
			pub = s.cli
		}
		return hooks.WrapUser(u, nil, pub, s.lastID.Add(1), s.stall).WithLog(s.log)
	}
	return hooks.WrapUser(u, s.reg, s.bus, s.lastID.Add(1), s.stall).WithLog(s.log)
}

// IMAPExtensions returns the inner storage's extensions unchanged.
func (s *Store) IMAPExtensions() []string { return s.inner.IMAPExtensions() }

// IMAPServerExtensions returns the go-imap server extensions the IMAP
// endpoint is to enable for this store: NOTIFY (RFC 5465) and the COMPRESS
// wrapper that keeps the module's lines out of the stream change
// (package imapext). Stock maddy never calls it; the custom build's change
// to maddy's IMAP endpoint (internal/custombuild, ServerExtensionsMethod;
// docs/maddy-changes.md) calls it once, from the endpoint's Init, before
// its listeners start. In maddy's CLI (no sessions) it returns nil.
func (s *Store) IMAPServerExtensions() []imapserver.Extension {
	if s.reg == nil {
		return nil
	}
	return imapext.Extensions()
}

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
