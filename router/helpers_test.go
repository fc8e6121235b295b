package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// env is a router following a real Consul agent, serving on a real listener.
type env struct {
	t      testing.TB
	consul *api.Client
	router *Router
	addr   string // the router's host:port
	client *http.Client
	swaps  chan *Table
}

func newEnv(t testing.TB, consul *api.Client, change func(*Config)) *env {
	t.Helper()
	e := &env{t: t, consul: consul, swaps: make(chan *Table, 1000)}
	cfg := Config{Consul: consul, Logger: testLogger(t), MinDelay: time.Millisecond,
		OnSwap: func(tab *Table) {
			select {
			case e.swaps <- tab:
			default:
			}
		}}
	if change != nil {
		change(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.router = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	srv := httptest.NewServer(r)
	e.addr = srv.Listener.Addr().String()
	e.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		e.client.CloseIdleConnections()
	})
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("router: no table from consul in 10s")
	}
	return e
}

// do sends a request for host through the router.
func (e *env) do(method, host, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+e.addr+path, body)
	if err != nil {
		return nil, err
	}
	req.Host = host
	return e.client.Do(req)
}

// get returns the status and body of GET host/path.
func (e *env) get(host, path string) (int, string) {
	e.t.Helper()
	resp, err := e.do("GET", host, path, nil)
	if err != nil {
		e.t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitBackends waits until host routes to n backends.
func (e *env) waitBackends(host string, n int) {
	e.t.Helper()
	testenv.Eventually(e.t, 30*time.Second, fmt.Sprintf("%s routed to %d instances", host, n), func() bool {
		r := e.router.Table().Lookup(host)
		return r != nil && len(r.Backends) == n
	})
}

// backend is an instance: a real HTTP server answering its name, registered in Consul as
// hostd registers instances.
type backend struct {
	name string
	srv  *httptest.Server
	id   string
	hits atomicCounter
	// failing makes its /healthz answer 503.
	failing atomic.Bool
}

type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// newBackend starts a server; handler nil answers "<name>\n".
func newBackend(t testing.TB, name string, handler http.Handler) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if b.failing.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		b.hits.add()
		if handler != nil {
			handler.ServeHTTP(w, r)
			return
		}
		fmt.Fprintln(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

type regOpts struct {
	internal bool
	ttl      bool   // a TTL check the test sets, instead of an HTTP check every 200ms
	status   string // the check's first status; passing by default
	// installation registers it as another installation's (the default one's otherwise).
	installation string
}

// register registers b as an instance of formation/service, the way hostd does.
func (b *backend) register(t testing.TB, c *api.Client, formation, service string, o regOpts) {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	b.id = formation + "-" + service + "-" + b.name
	if o.installation == "" {
		o.installation = names.DefaultInstallation
	}
	tags := []string{TagInstance, names.InstallationTag(o.installation)}
	if o.internal {
		tags = append(tags, TagInternal)
	}
	if o.status == "" {
		o.status = api.HealthPassing
	}
	check := &api.AgentServiceCheck{CheckID: "check-" + b.id, Status: o.status,
		HTTP: b.srv.URL + "/healthz", Interval: "200ms", Timeout: "1s",
		FailuresBeforeCritical: 2} // as hostd registers instances: one slow answer is not a failure
	if o.ttl {
		check = &api.AgentServiceCheck{CheckID: "check-" + b.id, Status: o.status, TTL: "10m"}
	}
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: b.id, Name: formation + "-" + service, Address: host, Port: p, Tags: tags,
		Meta:  map[string]string{MetaFormation: formation, MetaService: service, "instance": b.name},
		Check: check,
	})
	if err != nil {
		t.Fatalf("register %s: %v", b.id, err)
	}
}

func (b *backend) deregister(t testing.TB, c *api.Client) {
	t.Helper()
	if err := c.Agent().ServiceDeregister(b.id); err != nil {
		t.Fatalf("deregister %s: %v", b.id, err)
	}
}

// testLogger writes to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func discardJSON() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

func numCPU() int { return runtime.NumCPU() }
