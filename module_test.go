// SPDX-License-Identifier: GPL-3.0-or-later

package notify

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-imap/backend"
	imapserver "github.com/emersion/go-imap/server"
	backendtests "github.com/foxcpp/go-imap-backend-tests"
	imapsql "github.com/foxcpp/go-imap-sql"
	"github.com/foxcpp/maddy/framework/config"
	"github.com/foxcpp/maddy/framework/module"

	// maddy's own modules, storage.imapsql among them, register themselves
	// here; the tests create the real inner store through the registry.
	_ "github.com/foxcpp/maddy"

	"github.com/maddy-notify/maddy-notify/internal/custombuild"
)

func TestMain(m *testing.M) {
	// The inner store's update pipe listens on a socket in maddy's runtime
	// directory; keep it out of the system one.
	dir, err := os.MkdirTemp("", "notify-runtime-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	config.RuntimeDirectory = dir
	config.StateDirectory = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var instanceSeq atomic.Int64

// newInner registers and initialises a real storage.imapsql block on a
// fresh SQLite database in dir, the way maddy does for `storage.imapsql
// NAME { ... }`, and returns its name.
func newInner(t testing.TB, dir string) string {
	t.Helper()
	name := fmt.Sprintf("inner_%d", instanceSeq.Add(1))
	mod, err := module.Get("storage.imapsql")("storage.imapsql", name, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	module.RegisterInstance(mod, config.NewMap(nil, config.Node{
		Name: "storage.imapsql",
		Args: []string{name},
		Children: []config.Node{
			{Name: "driver", Args: []string{"sqlite3"}},
			{Name: "dsn", Args: []string{filepath.Join(dir, "imapsql.db")}},
			{Name: "msg_store", Args: []string{"fs", filepath.Join(dir, "messages")}},
		},
	}))
	return name
}

// newStore initialises a storage.notify block with the given directives.
func newStore(children ...config.Node) (*Store, error) {
	name := fmt.Sprintf("notify_%d", instanceSeq.Add(1))
	mod, err := New(ModName, name, nil, nil)
	if err != nil {
		return nil, err
	}
	err = mod.Init(config.NewMap(nil, config.Node{
		Name: ModName, Args: []string{name}, File: "maddy.conf", Line: 7,
		Children: children,
	}))
	return mod.(*Store), err
}

func storageNode(ref string) config.Node {
	return config.Node{Name: "storage", Args: []string{ref}, File: "maddy.conf", Line: 8}
}

// testBackend adapts a maddy storage to go-imap-backend-tests.
type testBackend struct {
	store module.ManageableStorage
	inner *imapsql.Backend // only for SetMessageLimit, which no storage interface carries
	close func()
}

func (b *testBackend) GetUser(name string) (backend.User, error) { return b.store.GetIMAPAcct(name) }
func (b *testBackend) CreateUser(name string) error              { return b.store.CreateIMAPAcct(name) }
func (b *testBackend) CreateMessageLimit() *uint32 {
	return b.store.(interface{ CreateMessageLimit() *uint32 }).CreateMessageLimit()
}
func (b *testBackend) SetMessageLimit(val *uint32) error { return b.inner.SetMessageLimit(val) }

// openBackend builds a fresh store; wrapped selects storage.notify around
// storage.imapsql instead of the bare storage.imapsql. Both get their
// update pipe switched on, as maddy's IMAP endpoint does.
func openBackend(t *testing.T, wrapped bool) backendtests.Backend {
	dir := t.TempDir()
	innerName := newInner(t, dir)
	innerMod, err := module.GetInstance(innerName)
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{
		inner: reflect.ValueOf(innerMod).Elem().FieldByName("Back").Interface().(*imapsql.Backend),
	}
	closeInner := func() {
		if err := innerMod.(io.Closer).Close(); err != nil {
			t.Error(err)
		}
	}
	if wrapped {
		s, err := newStore(storageNode("&" + innerName))
		if err != nil {
			t.Fatal(err)
		}
		b.store = s
		b.close = func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
			closeInner()
		}
	} else {
		if _, err := enableUpdatePipe(innerMod, pipeReplicate); err != nil {
			t.Fatal(err)
		}
		b.store = innerMod.(module.ManageableStorage)
		b.close = closeInner
	}
	return b
}

// TestBackendSuite runs maddy's storage test suite, go-imap-backend-tests,
// on the bare go-imap-sql store and on the same store behind storage.notify.
// The bare store passes every test; so must the wrapper.
func TestBackendSuite(t *testing.T) {
	for _, wrapped := range []bool{false, true} {
		name := "bare"
		if wrapped {
			name = "wrapped"
		}
		t.Run(name, func(t *testing.T) {
			backendtests.RunTests(t,
				func() backendtests.Backend { return openBackend(t, wrapped) },
				func(b backendtests.Backend) { b.(*testBackend).close() })
		})
	}
}

// TestInnerUpdatePipeShape fails loudly if maddy's storage.imapsql changes
// the shape of EnableUpdatePipe, which the wrapper calls by reflection.
func TestInnerUpdatePipeShape(t *testing.T) {
	innerMod, err := module.GetInstance(newInner(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()
	for i := 0; i < 2; i++ { // idempotent, as maddy documents it
		found, err := enableUpdatePipe(innerMod, pipeReplicate)
		if !found || err != nil {
			t.Fatalf("enableUpdatePipe(storage.imapsql) = %v, %v; want true, nil", found, err)
		}
	}
	if found, err := enableUpdatePipe(struct{}{}, pipeReplicate); found || err != nil {
		t.Fatalf("enableUpdatePipe(no method) = %v, %v; want false, nil", found, err)
	}
	wrong := struct{ EnableUpdatePipe func(int) error }{}
	_ = wrong // a field is no method: reflection must not find it
	if found, _ := enableUpdatePipe(&badPipe{}, pipeReplicate); !found {
		t.Fatal("enableUpdatePipe did not find a method with the wrong signature")
	} else if _, err := enableUpdatePipe(&badPipe{}, pipeReplicate); err == nil || !strings.Contains(err.Error(), "unsupported signature") {
		t.Fatalf("wrong signature: err = %v", err)
	}
}

// notAStorage is a configuration block of some other kind (a table).
type notAStorage struct{ name string }

func (n *notAStorage) Init(*config.Map) error { return nil }
func (n *notAStorage) Name() string           { return "table.x" }
func (n *notAStorage) InstanceName() string   { return n.name }

type badPipe struct{}

func (*badPipe) EnableUpdatePipe(mode int) error { return nil }

// TestConfigErrors checks that every configuration mistake stops Init with
// an error naming the block and the directive.
func TestConfigErrors(t *testing.T) {
	innerName := newInner(t, t.TempDir())
	innerMod, err := module.GetInstance(innerName)
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()

	tableName := fmt.Sprintf("table_%d", instanceSeq.Add(1))
	module.RegisterInstance(&notAStorage{name: tableName}, config.NewMap(nil, config.Node{Name: "table.x", Args: []string{tableName}}))

	cases := []struct {
		name     string
		children []config.Node
		want     []string
	}{
		{"missing storage", nil,
			[]string{"notify: block notify_", "maddy.conf:7", "missing required directive: storage"}},
		{"not a storage", []config.Node{storageNode("&" + tableName)},
			[]string{"notify: block notify_", "maddy.conf:8: storage &table_", "doesn't implement module.Storage"}},
		{"unknown block", []config.Node{storageNode("&no_such_block")},
			[]string{"notify: block notify_", "maddy.conf:8: storage &no_such_block:", "unknown config block: no_such_block"}},
		{"unknown directive", []config.Node{storageNode("&" + innerName), {Name: "bogus", Args: []string{"1"}, File: "maddy.conf", Line: 9}},
			[]string{"notify: block notify_", "maddy.conf:9", "unexpected directive: bogus"}},
		{"duplicate storage", []config.Node{storageNode("&" + innerName), storageNode("&" + innerName)},
			[]string{"notify: block notify_", "maddy.conf:8", "duplicate directive: storage"}},
		{"stall_timeout not a duration", []config.Node{storageNode("&" + innerName), {Name: "stall_timeout", Args: []string{"soon"}, File: "maddy.conf", Line: 9}},
			[]string{"notify: block notify_", "maddy.conf:9", `stall_timeout: time: invalid duration "soon"`}},
		{"stall_timeout too short", []config.Node{storageNode("&" + innerName), {Name: "stall_timeout", Args: []string{"0s"}, File: "maddy.conf", Line: 9}},
			[]string{"notify: block notify_", "maddy.conf:9", "stall_timeout: 0s is less than the minimum, 100ms"}},
		{"stall_timeout two arguments", []config.Node{storageNode("&" + innerName), {Name: "stall_timeout", Args: []string{"1s", "2s"}, File: "maddy.conf", Line: 9}},
			[]string{"notify: block notify_", "maddy.conf:9", "stall_timeout: exactly one duration is expected"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := newStore(c.children...)
			if err == nil {
				t.Fatal("Init succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestInlineArgumentsRejected(t *testing.T) {
	_, err := New(ModName, "", nil, []string{"x"})
	if err == nil || !strings.Contains(err.Error(), "takes no inline arguments") {
		t.Fatalf("err = %v", err)
	}
}

// TestSelfReference: a block that names itself as its storage is a config
// error, not an endless recursion at the first IMAP command.
func TestSelfReference(t *testing.T) {
	name := fmt.Sprintf("notify_%d", instanceSeq.Add(1))
	mod, err := New(ModName, name, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	module.RegisterInstance(mod, config.NewMap(nil, config.Node{
		Name: ModName, Args: []string{name}, File: "maddy.conf", Line: 3,
		Children: []config.Node{{Name: "storage", Args: []string{"&" + name}, File: "maddy.conf", Line: 4}},
	}))
	_, err = module.GetInstance(name)
	if err == nil || !strings.Contains(err.Error(), "maddy.conf:4: storage: a storage.notify block cannot wrap itself") {
		t.Fatalf("err = %v", err)
	}
}

// TestDocumentedDirectives keeps the reference page's directive list equal
// to the directives Init declares.
func TestDocumentedDirectives(t *testing.T) {
	doc, err := os.ReadFile("docs/reference/storage/notify.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, line := range strings.Split(string(doc), "\n") {
		if rest, ok := strings.CutPrefix(line, "### "); ok {
			documented = append(documented, strings.Fields(rest)[0])
		}
	}

	innerName := newInner(t, t.TempDir())
	innerMod, err := module.GetInstance(innerName)
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()
	cfg := config.NewMap(nil, config.Node{Name: ModName, Children: []config.Node{storageNode("&" + innerName)}})
	mod, _ := New(ModName, "doc_check", nil, nil)
	if err := mod.Init(cfg); err != nil {
		t.Fatal(err)
	}
	// config.Map keeps its declared directives private; read their names.
	var declared []string
	for _, k := range reflect.ValueOf(cfg).Elem().FieldByName("entries").MapKeys() {
		declared = append(declared, k.String())
	}
	sort.Strings(documented)
	sort.Strings(declared)
	if !reflect.DeepEqual(documented, declared) {
		t.Fatalf("documented directives %v, declared %v", documented, declared)
	}
}

// TestInnerSQLShape fails loudly if storage.imapsql stops keeping its
// driver and DSN where innerSQL reads them (the broker's default DSN).
func TestInnerSQLShape(t *testing.T) {
	dir := t.TempDir()
	innerMod, err := module.GetInstance(newInner(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()
	driver, dsn, ok := innerSQL(innerMod)
	if !ok || driver != "sqlite3" || dsn != filepath.Join(dir, "imapsql.db") {
		t.Fatalf("innerSQL = %q, %q, %v", driver, dsn, ok)
	}
	if _, _, ok := innerSQL(&notAStorage{}); ok {
		t.Fatal("innerSQL accepted a module that is not storage.imapsql")
	}
}

// TestBrokerDirective: broker values and their errors.
func TestBrokerDirective(t *testing.T) {
	innerName := newInner(t, t.TempDir())
	innerMod, err := module.GetInstance(innerName)
	if err != nil {
		t.Fatal(err)
	}
	defer innerMod.(io.Closer).Close()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sometimes"}, `broker: expected none or postgres [DSN], got "sometimes"`},
		{[]string{"postgres"}, "broker: postgres needs a DSN (the wrapped storage " + innerName + " is not storage.imapsql with driver postgres)"},
	} {
		_, err := newStore(storageNode("&"+innerName), config.Node{Name: "broker", Args: c.args})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("broker %v: err = %v, want %q", c.args, err, c.want)
		}
	}
	s, err := newStore(storageNode("&"+innerName), config.Node{Name: "broker", Args: []string{"none"}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestCustomBuildServerExtensionsMethod: the method the custom build's
// patched IMAP endpoint calls (custombuild.ServerExtensionsMethod) is the
// one Store has, with the signature the patch declares. Renaming either
// side fails here instead of silently cutting the door.
func TestCustomBuildServerExtensionsMethod(t *testing.T) {
	m, ok := reflect.TypeOf((*Store)(nil)).MethodByName(custombuild.ServerExtensionsMethod)
	if !ok {
		t.Fatalf("*Store has no method %s", custombuild.ServerExtensionsMethod)
	}
	want := reflect.TypeOf(func(*Store) []imapserver.Extension { return nil })
	if m.Type != want {
		t.Errorf("(*Store).%s is %v, want %v", custombuild.ServerExtensionsMethod, m.Type, want)
	}
}
