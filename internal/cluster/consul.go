package cluster

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is one Consul agent of the cluster: a server (in the root namespace, on the
// gateway address and ports of its own) or a client (a host's, in its namespace on the
// standard ports; or the control agent the test and the sync daemons use).
type Agent struct {
	Name string
	// HTTP is the address of its HTTP API as seen from the root namespace.
	HTTP string
	// Client talks to HTTP.
	Client *api.Client
	// Server is the address Raft knows a server by (ip:server port); empty for clients.
	Server string

	serf string // its gossip address
	proc
}

// agentPorts are the ports of one agent.
type agentPorts struct{ http, serf, server int }

// newAgent prepares an agent's command line. bind is the address it gossips on, client
// the addresses its HTTP API listens on (space-separated), join the serf addresses of the
// servers.
func newAgent(bin, dir, name, netns, bind, client string, ports agentPorts, server bool, join []string) (*Agent, error) {
	a := &Agent{Name: name, HTTP: net.JoinHostPort(bind, strconv.Itoa(ports.http)), serf: net.JoinHostPort(bind, strconv.Itoa(ports.serf))}
	args := []string{bin, "agent",
		"-node", name,
		"-bind", bind, "-client", client,
		"-http-port", strconv.Itoa(ports.http),
		"-serf-lan-port", strconv.Itoa(ports.serf),
		"-server-port", strconv.Itoa(ports.server),
		"-serf-wan-port", "-1",
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-data-dir", filepath.Join(dir, "data"),
		"-disable-host-node-id", "-log-level", "warn",
		// A killed agent does not leave: the others must find out, as with a lost machine.
		"-hcl", "leave_on_terminate = false",
		// No call to HashiCorp's update check: nothing leaves the cluster's network.
		"-hcl", "disable_update_check = true",
		"-hcl", "performance { raft_multiplier = 1 }",
		// The Connect CA signs the certificates the host daemons' mesh authenticates with.
		"-hcl", "connect { enabled = true }",
	}
	if server {
		a.Server = net.JoinHostPort(bind, strconv.Itoa(ports.server))
		args = append(args, "-server", "-bootstrap-expect", "3")
	}
	for _, j := range join {
		args = append(args, "-retry-join", j, "-retry-interval", "1s")
	}
	conf := api.DefaultConfig()
	conf.Address = a.HTTP
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", name, err)
	}
	a.Client = c
	a.proc = proc{netns: netns, args: args, logPath: filepath.Join(dir, "consul.log")}
	return a, nil
}

// Start starts the agent (again, after Kill: same ports, same data).
func (a *Agent) Start() error {
	if err := a.proc.start(); err != nil {
		return fmt.Errorf("consul agent %s: %w", a.Name, err)
	}
	return nil
}

// Kill kills the agent with SIGKILL, like a machine that lost power.
func (a *Agent) Kill() { a.proc.kill() }

// Running reports whether the agent's process runs.
func (a *Agent) Running() bool { return a.proc.running() }

// stop stops the agent gracefully (SIGINT, then SIGKILL after 5 seconds).
func (a *Agent) stop() { a.proc.stop(syscall.SIGINT, 5*time.Second) }

// LogTail is the end of the agent's log.
func (a *Agent) LogTail() string { return a.proc.logTail() }

func (a *Agent) serfAddr() string { return a.serf }

// waitLeader waits until the agent answers and knows a leader, for at most limit.
func (a *Agent) waitLeader(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if !a.Running() {
			return fmt.Errorf("consul agent %s exited: %s", a.Name, a.LogTail())
		}
		leader, err := a.Client.Status().Leader()
		switch {
		case err != nil:
			last = err
		case leader == "":
			last = fmt.Errorf("no leader yet")
		default:
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("consul agent %s: no leader after %s: %v\n%s", a.Name, limit, last, a.LogTail())
}
