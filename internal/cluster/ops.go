package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// Sync is a `gilliam-sync sync` daemon of the cluster, in the root namespace.
type Sync struct {
	ID string
	*testenv.Process
}

// StartSync starts a sync daemon named id on the cluster's repository, registry and
// control agent, with Options.SyncArgs and then extra on its command line (extra wins),
// and env added to its environment.
func (c *Cluster) StartSync(id string, env []string, extra ...string) *Sync {
	c.t.Helper()
	// The installation's root key, shared by its sync daemons (each has its own data dir).
	key := filepath.Join(c.Dir, "sync.key")
	c.mu.Lock()
	_, _, err := seal.LoadKeyFile(key, true)
	c.mu.Unlock()
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{"sync", "--repo", c.Repo.URL, "--registry", c.Registry.Addr, "--key-file", key,
		"--data", filepath.Join(c.Dir, "sync-"+id), "--id", id, "--consul", c.Control.HTTP,
		"--poll", "1s", "--log-format", "json"}
	args = append(append(args, c.opts.SyncArgs...), extra...)
	s := &Sync{ID: id, Process: testenv.Start(c.t, env, c.Bin, args...)}
	c.mu.Lock()
	c.syncs = append(c.syncs, s)
	c.mu.Unlock()
	return s
}

// StartSyncConfig starts a sync daemon named id with a gilliam-sync.yml whose data,
// registry, builder and leader id are the cluster's and the rest is config (its repos:
// list, placement: ...). Options.SyncArgs do not apply.
func (c *Cluster) StartSyncConfig(id string, env []string, config string) *Sync {
	c.t.Helper()
	data := filepath.Join(c.Dir, "sync-"+id)
	file := filepath.Join(c.Dir, "sync-"+id+".yml")
	head := fmt.Sprintf("data: %s\nregistry: %s\nbuilder: %s\nleader: {id: %s}\n", data, c.Registry.Addr, testenv.Builder(c.t), id)
	if err := os.WriteFile(file, []byte(head+config), 0o644); err != nil {
		c.t.Fatal(err)
	}
	args := []string{"sync", "--config", file, "--consul", c.Control.HTTP, "--log-format", "json"}
	s := &Sync{ID: id, Process: testenv.Start(c.t, env, c.Bin, args...)}
	c.mu.Lock()
	c.syncs = append(c.syncs, s)
	c.mu.Unlock()
	return s
}

// SyncLeader is the sync daemon that holds the leader lock now, or nil.
func (c *Cluster) SyncLeader() *Sync {
	pair, _, err := c.Control.Client.KV().Get(c.Store.LeaderKey(), nil)
	if err != nil || pair == nil || pair.Session == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.syncs {
		if s.ID == string(pair.Value) {
			return s
		}
	}
	return nil
}

// KillSyncLeader kills the leading sync daemon with SIGKILL and returns it.
func (c *Cluster) KillSyncLeader() (*Sync, error) {
	s := c.SyncLeader()
	if s == nil {
		return nil, fmt.Errorf("kill the sync leader: no sync daemon of this cluster holds the lock")
	}
	s.Kill()
	return s, nil
}

// ConsulLeader is the Consul server that leads now, or nil.
func (c *Cluster) ConsulLeader() *Agent {
	for _, a := range append([]*Agent{c.Control}, c.Servers...) {
		if !a.Running() {
			continue
		}
		leader, err := a.Client.Status().Leader()
		if err != nil || leader == "" {
			continue
		}
		for _, s := range c.Servers {
			if s.Server == leader {
				return s
			}
		}
	}
	return nil
}

// KillConsulLeader kills the Consul server that leads with SIGKILL and returns it; Start
// brings it back with its data.
func (c *Cluster) KillConsulLeader() (*Agent, error) {
	s := c.ConsulLeader()
	if s == nil {
		return nil, fmt.Errorf("kill the consul leader: no server knows a leader")
	}
	s.Kill()
	return s, nil
}

// WaitConsulLeader waits until a server other than old (nil: any) leads, and returns it.
func (c *Cluster) WaitConsulLeader(old *Agent, limit time.Duration) (*Agent, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if s := c.ConsulLeader(); s != nil && s != old {
			return s, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("no new consul leader after %s", limit)
}

// StopRegistry takes the registry away: connections refused until StartRegistry.
func (c *Cluster) StopRegistry() { c.Registry.Stop() }

// StartRegistry brings the registry back on the same address with the same content.
func (c *Cluster) StartRegistry() error { return c.Registry.Start() }

// Host returns host N (from 1).
func (c *Cluster) Host(n int) *Host { return c.Hosts[n-1] }

// HostByID returns the host with that ID, or nil.
func (c *Cluster) HostByID(id string) *Host {
	for _, h := range c.Hosts {
		if h.ID == id {
			return h
		}
	}
	return nil
}
