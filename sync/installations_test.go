package sync_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// registerHost registers a live host of store's installation on the Consul agent and
// publishes its key record, as its host daemon would.
func registerHost(t *testing.T, c *testenv.Consul, store *state.Store, id string) {
	t.Helper()
	if err := c.Client.Agent().ServiceRegister(store.HostRegistration(state.Host{ID: id, Address: "127.0.0.1",
		Capacity: state.Resources{CPU: 4000, Memory: 8 << 30}}, time.Hour, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Agent().PassTTL(store.HostCheckID(id), ""); err != nil {
		t.Fatal(err)
	}
	trustHost(t, store, id)
}

func placedOn(t *testing.T, store *state.Store) map[string]int {
	t.Helper()
	assigned, _, err := store.Assignments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for h, a := range assigned {
		out[h] += len(a.Instances)
	}
	return out
}

// Two installations on one Consul, each under its own prefix with a formation of the same
// name, never see each other: each places only on its own hosts and reads only its own
// instances' health; and the installations' host registrations, on one agent, are apart.
func TestTwoInstallationsOnOneConsul(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	ctx := context.Background()
	image := randomImage(t, reg)
	a, b := state.NewStore(consul.Client, ""), state.NewStore(consul.Client, "teams/b/")
	if a.Installation() != "gilliam" || b.Installation() != "teams-b" {
		t.Fatalf("installations %q %q", a.Installation(), b.Installation())
	}
	registerHost(t, consul, a, "h1")
	registerHost(t, consul, b, "h1") // the same host ID, another installation, one agent
	registerHost(t, consul, b, "hb2")

	for _, st := range []*state.Store{a, b} {
		repo := git.NewRepo(t, "shop-"+st.Installation())
		repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: shop\nservices:\n  web:\n    image: %s\n    scale: 4\n    resources: {memory: 8Mi}\n", image)}, "init")
		key, _ := seal.Generate() // each installation has its own root key
		s, err := sync.New(sync.Config{Key: key, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir()}, st, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := placedOn(t, a); got["h1"] != 4 || len(got) != 1 {
		t.Fatalf("installation a placed %v: want its 4 on its h1", got)
	}
	if got := placedOn(t, b); got["h1"]+got["hb2"] != 4 || len(got) != 2 {
		t.Fatalf("installation b placed %v: want its 4 on its h1 and hb2", got)
	}
	hostsA, _ := a.Hosts(ctx)
	hostsB, _ := b.Hosts(ctx)
	if len(hostsA) != 1 || len(hostsB) != 2 {
		t.Fatalf("hosts: a sees %v, b sees %v", hostsA, hostsB)
	}

	// An instance registration of b's is not in a's health, and the other way round.
	for _, st := range []*state.Store{a, b} {
		inst := "shop-web-0000-" + st.Installation()
		err := consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: state.RegistrationID("h1", inst), Name: "shop-web", Port: 1,
			Tags:  []string{"gilliam", names.InstallationTag(st.Installation())},
			Meta:  map[string]string{"host": "h1", "instance": inst, names.MetaInstallation: st.Installation()},
			Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []*state.Store{a, b} {
		health, _, err := st.InstanceHealth(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(health) != 1 {
			t.Fatalf("installation %s sees %d instance registrations: %v", st.Installation(), len(health), health)
		}
		for _, ic := range health {
			if !strings.HasSuffix(ic.Instance, st.Installation()) {
				t.Fatalf("installation %s sees %s", st.Installation(), ic.Instance)
			}
		}
	}
}

// lockedBuffer is a log sink tests read while a daemon writes.
type lockedBuffer struct {
	mu  stdsync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A host registration the leader cannot tie to the host is ignored, and said: one made on
// another Consul node than the host's key record names (a stolen host token registering
// under another host's ID, with any capacity), and one of a host that published no key.
func TestHostRegistrationNotOnItsNodeIgnored(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	ctx := context.Background()
	store := state.NewStore(consul.Client, "")
	registerHost(t, consul, store, "h1")
	// h1 again, on another node, with a huge capacity: an impostor.
	fake := state.HostRegistration(state.Host{ID: "h1", Address: "10.9.9.9", Capacity: state.Resources{CPU: 1 << 40, Memory: 1 << 50}}, time.Hour, time.Hour)
	if _, err := consul.Client.Catalog().Register(&api.CatalogRegistration{Node: "evil", Address: "10.9.9.9",
		Service: &api.AgentService{ID: fake.ID, Service: fake.Name, Address: fake.Address, Meta: fake.Meta, Tags: fake.Tags},
		Check:   &api.AgentCheck{Node: "evil", CheckID: "alive", ServiceID: fake.ID, Status: api.HealthPassing}}, nil); err != nil {
		t.Fatal(err)
	}
	// h2 registered, no key record.
	if err := consul.Client.Agent().ServiceRegister(state.HostRegistration(state.Host{ID: "h2", Address: "127.0.0.1",
		Capacity: state.Resources{CPU: 4000, Memory: 8 << 30}}, time.Hour, time.Hour)); err != nil {
		t.Fatal(err)
	}
	consul.Client.Agent().PassTTL(state.HostCheckID("h2"), "")

	repo := git.NewRepo(t, "shop")
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: shop\nservices:\n  web:\n    image: %s\n    scale: 3\n    resources: {memory: 8Mi}\n", randomImage(t, reg))}, "init")
	var logs lockedBuffer
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := placedOn(t, store); got["h1"] != 3 || len(got) != 1 {
		t.Fatalf("placed %v: want all 3 on the real h1", got)
	}
	out := logs.String()
	if !strings.Contains(out, "host registration ignored") || !strings.Contains(out, "node=evil") || !strings.Contains(out, "host=h2") {
		t.Fatalf("the ignored registrations are not said:\n%s", out)
	}
}
