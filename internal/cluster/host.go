package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// Host is one machine of the cluster: a network namespace with its own address, Docker
// engine, Consul client agent and host daemon.
type Host struct {
	// ID is the host's id in Consul and in container labels: <cluster>-hN.
	ID string
	// Index is N, from 1.
	Index int
	// Addr is the host's address; its instances are published and registered on it.
	Addr string
	// Netns names its network namespace (the file under /var/run/netns).
	Netns string
	// Dir holds its engine's data, its agent's data and its daemon's data.
	Dir string
	// Docker talks to its engine.
	Docker *client.Client
	// Agent is its Consul client agent; its HTTP API answers on Addr:8500 too.
	Agent *Agent
	// Daemon is its `gilliam-sync host` process, nil once powered off.
	Daemon *testenv.Process

	c      *Cluster
	engine proc
	off    bool
}

func (c *Cluster) newHost(i int) *Host {
	id := fmt.Sprintf("%s-h%d", c.Name, i)
	h := &Host{ID: id, Index: i, Addr: c.net.hostAddr(i), Netns: id, Dir: filepath.Join(c.Dir, fmt.Sprintf("h%d", i)), c: c}
	return h
}

// boot makes the host's namespace, starts its engine and its agent, and waits for both.
func (h *Host) boot() error {
	c := h.c
	if err := os.MkdirAll(filepath.Join(h.Dir, "consul"), 0o755); err != nil {
		return err
	}
	if err := c.net.addHost(h.Index, h.Netns); err != nil {
		return err
	}
	// An empty config file: the machine's daemon.json sets data-root.
	conf := filepath.Join(h.Dir, "daemon.json")
	if err := os.WriteFile(conf, []byte("{}\n"), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(h.Dir, "docker.sock")
	h.engine = proc{netns: h.Netns, logPath: filepath.Join(h.Dir, "dockerd.log"), args: []string{"dockerd",
		"--config-file", conf,
		"--data-root", filepath.Join(h.Dir, "docker"),
		"--exec-root", filepath.Join(h.Dir, "exec"),
		"--pidfile", filepath.Join(h.Dir, "dockerd.pid"),
		"-H", "unix://" + sock,
		"--containerd-namespace", h.Netns,
		"--containerd-plugins-namespace", h.Netns + "p",
		"--storage-driver", "fuse-overlayfs",
		"--insecure-registry", c.Registry.Addr,
		// The engine's bridge, inside the host's namespace only.
		"--bip", "10.214.0.1/24",
		// Its containers' cgroups, where PowerOff finds their processes.
		"--cgroup-parent", "/" + h.Netns,
	}}
	if err := h.engine.start(); err != nil {
		return fmt.Errorf("host %s engine: %w", h.ID, err)
	}
	agent, err := newAgent(c.consul, filepath.Join(h.Dir, "consul"), h.ID, h.Netns, h.Addr, "127.0.0.1 "+h.Addr,
		agentPorts{http: 8500, serf: 8301, server: 8300}, false, c.serverJoins())
	if err != nil {
		return err
	}
	h.Agent = agent
	if err := agent.Start(); err != nil {
		return err
	}
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("host %s: docker client: %w", h.ID, err)
	}
	h.Docker = cli
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Ping(ctx)
		cancel()
		if err == nil {
			cli.NegotiateAPIVersion(context.Background())
			break
		}
		if !h.engine.running() || time.Now().After(deadline) {
			return fmt.Errorf("host %s: its engine does not answer: %v\n%s", h.ID, err, h.engine.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return agent.waitLeader(60 * time.Second)
}

// startDaemon starts the host's `gilliam-sync host` in its namespace, on its engine and
// its agent.
func (h *Host) startDaemon() {
	c := h.c
	args := append([]string{"--net=" + filepath.Join(netnsDir, h.Netns), c.Bin, "host",
		"--id", h.ID, "--advertise", h.Addr, "--consul", "127.0.0.1:8500",
		"--data", filepath.Join(h.Dir, "host"), "--log-format", "json",
		"--cpu", "2", "--memory", "4Gi"}, c.opts.HostArgs...)
	if c.opts.HostLabels != nil {
		args = append(args, "--labels", c.opts.HostLabels(h.Index))
	}
	h.Daemon = testenv.Start(c.t, []string{"DOCKER_HOST=unix://" + filepath.Join(h.Dir, "docker.sock")}, "nsenter", args...)
}

// cgroup is the cgroup its engine puts containers under.
func (h *Host) cgroup() string { return h.Netns }

// Containers lists the containers of the host's engine that run now, with their labels.
func (h *Host) Containers() ([]container.Summary, error) {
	if h.off {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.Docker.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("status", "running"))})
}

// PowerOff is a machine losing power: its cable goes first (nothing more leaves the
// namespace, not even a TCP reset), then every process of the namespace (engine,
// containerd and its shims, agent, host daemon) and of its containers' cgroups gets
// SIGKILL at once. Nothing is told to stop.
func (h *Host) PowerOff() error {
	if h.off {
		return nil
	}
	h.off = true
	if err := h.c.net.setLink(h.Index, false); err != nil {
		return fmt.Errorf("power off %s: %w", h.ID, err)
	}
	if err := killAll(h.Netns, h.cgroup()); err != nil {
		return fmt.Errorf("power off %s: %w", h.ID, err)
	}
	return nil
}

// Off reports whether the host was powered off.
func (h *Host) Off() bool { return h.off }

// Partition pulls the host's cable: it keeps running, alone.
func (h *Host) Partition() error { return h.c.net.setLink(h.Index, false) }

// Heal plugs the cable back.
func (h *Host) Heal() error { return h.c.net.setLink(h.Index, true) }

// remove kills whatever the host runs and removes its namespace, cgroups, mounts and
// files. The daemon goes first and gently, so that its test log ends cleanly.
func (h *Host) remove() {
	if h.Daemon != nil && !h.off {
		h.Daemon.Stop()
	}
	if h.Agent != nil {
		h.Agent.proc.stop(syscall.SIGKILL, time.Second)
	}
	killAll(h.Netns, h.cgroup())
	h.engine.kill() // reaped
	if h.Docker != nil {
		h.Docker.Close()
	}
	unmountUnder(h.Dir)
	removeCgroups(h.cgroup())
	deleteNetns(h.Netns)
}
