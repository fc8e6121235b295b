package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/build"
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

// Tests of this package run in parallel (t.Parallel), each with its own Consul, registry
// and git server; what they share is the Docker engine. So the names they make there are
// their own: host IDs from uniqueID (containers are named by host), formations built with
// buildpacks named differently in each test (cache volumes are named by formation), and
// build cache volumes removed at cleanup by the test's registry (removeBuildCaches).
func newCluster(t *testing.T, opts ...testenv.ConsulOption) *cluster {
	t.Helper()
	c := &cluster{t: t, consul: testenv.NewConsul(t, opts...), reg: testenv.NewRegistry(t),
		docker: testenv.NewDocker(t), git: testenv.NewGitServer(t), bin: testenv.Binary(t)}
	// Registered before any daemon starts, so it runs after they all stopped.
	t.Cleanup(func() { removeBuildCaches(t, c.docker, c.reg.Addr) })
	c.repo = c.git.NewRepo(t, "app")
	c.store = state.NewStore(c.consul.Client, "")
	return c
}

var uniqueN atomic.Int64

// uniqueID is name with a suffix no other test of this run, in this process or another
// started at about the same time, gives: the clock and a counter.
func uniqueID(name string) string {
	return fmt.Sprintf("%s-%d%02d", name, time.Now().UnixNano()%1e7, uniqueN.Add(1)%100)
}

// removeBuildCaches removes the build cache volumes of builds that published to registry
// (build labels each volume with its registry): a test's registry is its own, so they are
// the test's. A volume pack has just let go of can be busy a moment longer.
func removeBuildCaches(t *testing.T, d *testenv.Docker, registry string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := d.Client.VolumeList(ctx, volume.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", build.LabelRegistry+"="+registry)),
	})
	if err != nil {
		t.Errorf("list the test's build cache volumes: %v", err)
		return
	}
	var names []string
	for _, v := range list.Volumes {
		// The launch cache's volume, named after it, is pack's, without our labels.
		names = append(names, v.Name, strings.TrimSuffix(v.Name, ".build")+".launch")
	}
	for _, name := range names {
		for i := 0; ; i++ {
			err := d.Client.VolumeRemove(ctx, name, true)
			if err == nil || errdefs.IsNotFound(err) {
				break
			}
			if i == 20 {
				t.Errorf("remove build cache volume %s: %v", name, err)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// helloAs is a copy of the hello example whose formation is named formation: tests that
// build it at the same time then use build cache volumes of their own.
func helloAs(t *testing.T, formation string) string {
	t.Helper()
	src := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "hello")
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "gilliam.yml" {
			renamed := strings.Replace(string(b), "\nformation: hello\n", "\nformation: "+formation+"\n", 1)
			if renamed == string(b) {
				t.Fatal("the hello example's formation line moved; update helloAs")
			}
			b = []byte(renamed)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// host runs a host daemon in this test process, with a unique ID whose containers are
// removed at cleanup. It returns the ID.
func (c *cluster) host(name string, opts ...func(*hostd.Config)) string {
	c.t.Helper()
	id := uniqueID(name)
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
