package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Options shape a cluster. The zero value is three hosts with the daemons' defaults.
type Options struct {
	// Hosts is the number of hosts (3).
	Hosts int
	// HostArgs are added to every `gilliam-sync host` command line (--ttl 2s, ...).
	HostArgs []string
	// HostLabels, when set, gives host N (from 1) its --labels (zone=a,...).
	HostLabels func(n int) string
	// SyncArgs are added to every `gilliam-sync sync` command line (--dead-after 5s, ...).
	SyncArgs []string
}

// Cluster is a running cluster; New starts it and t.Cleanup removes every part of it.
type Cluster struct {
	// Name prefixes every namespace, interface and cgroup of the cluster (gcl-xxxx).
	Name string
	// Dir holds the cluster's files: BaseDir/Name.
	Dir string
	// Gateway is the root namespace's address on the cluster's network, where the Consul
	// servers, the control agent and the registry listen.
	Gateway string
	// Servers are the three Consul servers; Control is a client agent in the root
	// namespace, the one the test and the sync daemons talk to.
	Servers []*Agent
	Control *Agent
	// Store reads and writes gilliam-sync's state through Control.
	Store    *state.Store
	Registry *Registry
	Hosts    []*Host
	// Git serves Repo, the repository the sync daemons deploy.
	Git  *testenv.GitServer
	Repo *testenv.GitRepo
	// Bin is the gilliam-sync binary every host and sync daemon runs.
	Bin string
	// StartedIn is how long New took, from nothing to every host registered and alive.
	StartedIn time.Duration

	t      testing.TB
	opts   Options
	net    network
	consul string

	mu    sync.Mutex
	syncs []*Sync
}

// New starts a cluster, failing the test when a part does not come up.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	start := time.Now()
	if opts.Hosts <= 0 {
		opts.Hosts = 3
	}
	if os.Geteuid() != 0 {
		t.Fatal("cluster: network namespaces and a Docker engine per host need root")
	}
	for _, bin := range []string{"ip", "nsenter", "dockerd", "fuse-overlayfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("cluster: %s not found (make tools installs fuse-overlayfs): %v", bin, err)
		}
	}
	consul := filepath.Join(testenv.ToolsDir(t), "bin", "consul")
	if _, err := os.Stat(consul); err != nil {
		t.Fatalf("cluster: consul not found at %s: run `make tools`", consul)
	}
	suffix := make([]byte, 2)
	rand.Read(suffix)
	c := &Cluster{Name: Prefix + "-" + hex.EncodeToString(suffix), t: t, opts: opts, consul: consul, Bin: testenv.Binary(t)}
	c.Dir = filepath.Join(BaseDir, c.Name)
	subnet, err := pickSubnet()
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.net = network{prefix: c.Name, subnet: subnet}
	c.Gateway = c.net.gateway()
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	// make clean-cluster leaves a cluster alone while the process that made it lives.
	if err := os.WriteFile(filepath.Join(c.Dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(c.teardown)
	if err := c.net.up(); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if c.Registry, err = newRegistry(c.Gateway); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.Git = testenv.NewGitServer(t)
	c.Repo = c.Git.NewRepo(t, "app")

	if err := c.startConsul(); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	c.Store = state.NewStore(c.Control.Client, "")

	c.Hosts = make([]*Host, opts.Hosts)
	errs := make([]error, opts.Hosts)
	var wg sync.WaitGroup
	for i := range c.Hosts {
		c.Hosts[i] = c.newHost(i + 1)
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.Hosts[i].boot() }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	// The host daemons are testenv processes (their logs parsed), started from the test's
	// goroutine.
	for _, h := range c.Hosts {
		h.startDaemon()
	}
	ctx := context.Background()
	testenv.Eventually(t, 60*time.Second, "every host registered and alive", func() bool {
		hosts, err := c.Store.Hosts(ctx)
		if err != nil {
			return false
		}
		alive := map[string]bool{}
		for _, h := range hosts {
			alive[h.ID] = h.Passing
		}
		for _, h := range c.Hosts {
			if !alive[h.ID] {
				return false
			}
		}
		return true
	})
	c.StartedIn = time.Since(start)
	return c
}

// startConsul starts three servers and the control agent and waits for a leader.
func (c *Cluster) startConsul() error {
	var joins []string
	ports := make([]agentPorts, 3)
	for i := range ports {
		ports[i] = agentPorts{http: testenv.FreePort(c.t), serf: testenv.FreePort(c.t), server: testenv.FreePort(c.t)}
		joins = append(joins, c.Gateway+":"+strconv.Itoa(ports[i].serf))
	}
	for i := range ports {
		dir := filepath.Join(c.Dir, fmt.Sprintf("server%d", i+1))
		a, err := newAgent(c.consul, dir, fmt.Sprintf("%s-server%d", c.Name, i+1), "", c.Gateway, c.Gateway, ports[i], true, joins)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := a.Start(); err != nil {
			return err
		}
		c.Servers = append(c.Servers, a)
	}
	dir := filepath.Join(c.Dir, "control")
	os.MkdirAll(dir, 0o755)
	ctl, err := newAgent(c.consul, dir, c.Name+"-control", "", c.Gateway, c.Gateway,
		agentPorts{http: testenv.FreePort(c.t), serf: testenv.FreePort(c.t), server: testenv.FreePort(c.t)}, false, joins)
	if err != nil {
		return err
	}
	if err := ctl.Start(); err != nil {
		return err
	}
	c.Control = ctl
	return ctl.waitLeader(60 * time.Second)
}

// serverJoins are the serf addresses of the servers, for agents' -retry-join.
func (c *Cluster) serverJoins() []string {
	var joins []string
	for _, s := range c.Servers {
		joins = append(joins, s.serfAddr())
	}
	return joins
}

// teardown removes everything, whatever state the test left the cluster in.
func (c *Cluster) teardown() {
	c.mu.Lock()
	syncs := c.syncs
	c.mu.Unlock()
	for _, s := range syncs {
		s.Stop()
	}
	var wg sync.WaitGroup
	for _, h := range c.Hosts {
		if h == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); h.remove() }()
	}
	wg.Wait()
	if c.Control != nil {
		c.Control.Kill()
	}
	for _, s := range c.Servers {
		s.Kill()
	}
	if c.Registry != nil {
		c.Registry.Stop()
	}
	deleteNetns(c.net.switchNS())
	run("ip", "link", "delete", c.Name) // gone with the switch's namespace, normally
	unmountUnder(c.Dir)
	if err := os.RemoveAll(c.Dir); err != nil {
		c.t.Logf("cluster: remove %s: %v", c.Dir, err)
	}
}

// Logs returns the end of every Consul agent's and engine's log, for a failure message.
func (c *Cluster) Logs() string {
	out := ""
	for _, s := range c.Servers {
		out += fmt.Sprintf("--- %s\n%s\n", s.Name, s.LogTail())
	}
	for _, h := range c.Hosts {
		out += fmt.Sprintf("--- %s consul\n%s\n--- %s engine\n%s\n", h.ID, h.Agent.LogTail(), h.ID, h.engine.logTail())
	}
	return out
}
