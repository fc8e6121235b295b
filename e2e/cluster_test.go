package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// cluster is a control plane's surroundings for one test: Consul, a registry, a git
// server with one repository, and the Docker engine.
type cluster struct {
	t      *testing.T
	consul *testenv.Consul
	reg    *testenv.Registry
	docker *testenv.Docker
	git    *testenv.GitServer
	repo   *testenv.GitRepo
	store  *state.Store
	bin    string
}

func newCluster(t *testing.T, opts ...testenv.ConsulOption) *cluster {
	t.Helper()
	c := &cluster{t: t, consul: testenv.NewConsul(t, opts...), reg: testenv.NewRegistry(t),
		docker: testenv.NewDocker(t), git: testenv.NewGitServer(t), bin: testenv.Binary(t)}
	c.repo = c.git.NewRepo(t, "app")
	c.store = state.NewStore(c.consul.Client, "")
	return c
}

// host runs a host daemon in this test process, with a unique ID whose containers are
// removed at cleanup. It returns the ID.
func (c *cluster) host(name string, opts ...func(*hostd.Config)) string {
	c.t.Helper()
	id := fmt.Sprintf("%s-%d", name, time.Now().UnixNano()%1e9)
	cfg := hostd.Config{
		ID: id, Advertise: "127.0.0.1", DataDir: c.t.TempDir(), Resync: time.Second,
		Capacity: hostd.MachineCapacity(),
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("host", id),
	}
	for _, o := range opts {
		o(&cfg)
	}
	d, err := hostd.New(cfg, c.store, c.docker.Client)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	c.t.Cleanup(func() {
		cancel()
		<-done
		c.docker.RemoveContainers(c.t, hostd.LabelHost, id)
	})
	return id
}

// sync starts a sync daemon process on the repository.
func (c *cluster) sync(id string, env []string, extra ...string) *testenv.Process {
	c.t.Helper()
	args := append([]string{"sync", "--repo", c.repo.URL, "--registry", c.reg.Addr, "--data", c.t.TempDir(),
		"--id", id, "--interval", "1s", "--poll", "1s", "--lock-ttl", "10s", "--lock-delay", "1s", "--log-format", "json",
		"--builder", testenv.Builder(c.t)}, extra...)
	return testenv.Start(c.t, append(c.consul.Env(), env...), c.bin, args...)
}

// passing returns the addresses of a Consul service's passing instances, by instance ID.
func (c *cluster) passing(service string) map[string]string {
	entries, _, err := c.consul.Client.Health().Service(service, "", true, nil)
	out := map[string]string{}
	if err != nil {
		return out
	}
	for _, e := range entries {
		out[e.Service.Meta["instance"]] = fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port)
	}
	return out
}

// assigned lists every instance assigned to any host, by ID.
func (c *cluster) assigned() map[string]string {
	c.t.Helper()
	as, _, err := c.store.Assignments(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]string{}
	for h, a := range as {
		for _, i := range a.Instances {
			out[i.ID] = h
		}
	}
	return out
}

// countAnswering counts the passing instances of a Consul service that answer GET / with
// message.
func (c *cluster) countAnswering(service, message string) int {
	n := 0
	for _, addr := range c.passing(service) {
		if testenv.HTTPGet("http://"+addr+"/") == message {
			n++
		}
	}
	return n
}

// desired reads one service's desired state.
func (c *cluster) desired(formation, service string) state.DesiredService {
	c.t.Helper()
	d, _, err := c.store.Desired(context.Background(), formation)
	if err != nil || d == nil {
		c.t.Fatalf("desired state of %s: %v", formation, err)
	}
	return d.Services[service]
}
