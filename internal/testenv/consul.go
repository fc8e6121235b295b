package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
)

// Consul is a real Consul agent running for one test: the binary `make tools` built, on
// 127.0.0.1 and free ports, stopped by t.Cleanup.
type Consul struct {
	// Addr is the HTTP API's host:port.
	Addr string
	// Client talks to Addr (with the management token when ACLs are on).
	Client *api.Client
	// Token is the management token when ACLs are on, else empty.
	Token string
	// RootKey is the root key of the installation the test runs on this Consul (made per
	// Consul): Env gives it to every gilliam-sync process, so that the sync daemons of a
	// test share it, as an installation's do, and the CLI can open config vars.
	RootKey *seal.Key

	t       testing.TB
	args    []string
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

type consulConfig struct {
	persistent bool
	hcl        []string
	token      string
}

// ConsulOption changes how NewConsul starts the agent.
type ConsulOption func(*consulConfig)

// ConsulPersistent runs a single-node server with a data dir instead of dev mode, so that
// Stop and Start keep the KV store and the catalog, like a real cluster that was away.
func ConsulPersistent() ConsulOption {
	return func(c *consulConfig) { c.persistent = true }
}

// ConsulACL turns ACLs on with default_policy deny; Client and Token carry the management
// token.
func ConsulACL() ConsulOption {
	return func(c *consulConfig) {
		c.token = "root-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		c.hcl = append(c.hcl, fmt.Sprintf(
			`acl { enabled = true default_policy = "deny" enable_token_persistence = true tokens { initial_management = %q agent = %q } }`,
			c.token, c.token))
	}
}

// NewConsul starts an agent and waits until it has a leader and its node is in the catalog.
func NewConsul(t testing.TB, opts ...ConsulOption) *Consul {
	t.Helper()
	var cfg consulConfig
	for _, o := range opts {
		o(&cfg)
	}
	bin := tool(t, "consul")
	dir := t.TempDir()
	root, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c := &Consul{
		t:       t,
		RootKey: root,
		Token:   cfg.token,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "consul.log"),
	}
	conf := api.DefaultConfig()
	conf.Token = c.Token
	// Another process may take a port between FreePort and the agent binding it: then the
	// agent starts again on other ports.
	for attempt := 1; ; attempt++ {
		c.setArgs(bin, cfg)
		conf.Address = c.Addr
		client, err := api.NewClient(conf)
		if err != nil {
			t.Fatalf("testenv: consul client: %v", err)
		}
		c.Client = client
		err = c.start()
		if err == nil {
			break
		}
		if attempt == 3 || !strings.Contains(c.LogTail(), "address already in use") {
			t.Fatalf("testenv: consul did not become ready: %v\n%s", err, c.LogTail())
		}
		os.RemoveAll(c.dataDir)
	}
	t.Cleanup(c.Stop)
	return c
}

func (c *Consul) setArgs(bin string, cfg consulConfig) {
	t := c.t
	c.Addr = freeAddr(t)
	_, httpPort, _ := net.SplitHostPort(c.Addr)
	node := "test-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	c.args = []string{bin, "agent",
		"-node", node,
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", httpPort,
		"-serf-lan-port", strconv.Itoa(FreePort(t)),
		"-serf-wan-port", strconv.Itoa(FreePort(t)),
		"-server-port", strconv.Itoa(FreePort(t)),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-disable-host-node-id", "-log-level", "warn",
		// No call to HashiCorp's update check: tests use no network but loopback.
		"-hcl", "disable_update_check = true",
	}
	if cfg.persistent {
		c.args = append(c.args, "-server", "-bootstrap-expect", "1", "-data-dir", c.dataDir,
			"-hcl", "performance { raft_multiplier = 1 }", "-hcl", "leave_on_terminate = false")
	} else {
		c.args = append(c.args, "-dev")
	}
	for _, h := range cfg.hcl {
		c.args = append(c.args, "-hcl", h)
	}
}

// Start starts the agent again, after Stop, on the same ports and waits until it
// serves.
func (c *Consul) Start() {
	c.t.Helper()
	if err := c.start(); err != nil {
		c.t.Fatalf("testenv: consul did not become ready: %v\n%s", err, c.LogTail())
	}
}

func (c *Consul) start() error {
	if c.cmd != nil {
		return fmt.Errorf("already running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.args[0], c.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start consul: %w", err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	if err := c.waitReady(30 * time.Second); err != nil {
		c.Stop()
		return err
	}
	return nil
}

func (c *Consul) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return fmt.Errorf("consul exited")
		default:
		}
		leader, err := c.Client.Status().Leader()
		switch {
		case err != nil:
			last = err
		case leader == "":
			last = fmt.Errorf("no leader yet")
		default:
			// A consistent read: a leader answers one only once it has applied its whole
			// log. Right after a restart it is elected before that, and a default read
			// can still miss keys written before the stop (seen once in CI).
			nodes, _, err := c.Client.Catalog().Nodes(&api.QueryOptions{RequireConsistent: true})
			if err == nil && len(nodes) > 0 {
				return nil
			}
			last = fmt.Errorf("node not in the catalog yet (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// Stop stops the agent gracefully (SIGINT, then SIGKILL after 10 seconds).
func (c *Consul) Stop() { c.signal(syscall.SIGINT, 10*time.Second) }

func (c *Consul) signal(sig syscall.Signal, grace time.Duration) {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(sig)
	select {
	case <-c.exited:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// LogTail is the end of the agent's log, for failure messages.
func (c *Consul) LogTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// Env is the environment that points Consul clients (and the gilliam-sync binary) at this
// agent.
func (c *Consul) Env() []string {
	env := []string{"CONSUL_HTTP_ADDR=" + c.Addr}
	if c.RootKey != nil {
		env = append(env, "GILLIAM_SYNC_KEY="+c.RootKey.String())
	}
	if c.Token != "" {
		env = append(env, "CONSUL_HTTP_TOKEN="+c.Token)
	}
	return env
}
