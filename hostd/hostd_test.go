package hostd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// env is a host daemon's world in a test, everything in it real: a Consul agent, the
// Docker engine, a registry holding the test app.
type env struct {
	consul   *testenv.Consul
	docker   *testenv.Docker
	registry *testenv.Registry
	store    *state.Store
	image    string // the test app, in the registry, by digest
	hostID   string
	dataDir  string
	logs     *logRecorder // the last config's
}

// logRecorder passes log records on and keeps their messages, for tests to wait for.
type logRecorder struct {
	slog.Handler
	rec *records
}

type records struct {
	mu   sync.Mutex
	msgs []string
}

func newLogRecorder(h slog.Handler) *logRecorder { return &logRecorder{Handler: h, rec: &records{}} }

func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	l.rec.mu.Lock()
	l.rec.msgs = append(l.rec.msgs, r.Message)
	l.rec.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithAttrs(attrs), rec: l.rec}
}

func (l *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{Handler: l.Handler.WithGroup(name), rec: l.rec}
}

// count is how many records had message msg.
func (l *logRecorder) count(msg string) int {
	l.rec.mu.Lock()
	defer l.rec.mu.Unlock()
	n := 0
	for _, m := range l.rec.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func newEnv(t *testing.T, opts ...testenv.ConsulOption) *env {
	t.Helper()
	e := &env{consul: newConsul(t, opts...), docker: testenv.NewDocker(t), registry: testenv.NewRegistry(t)}
	e.docker.Client.NegotiateAPIVersion(context.Background()) // before the test and a daemon share the client
	e.image = testenv.PushImage(t, e.docker.TestImage(t), e.registry.Addr+"/test/app")
	e.store = state.NewStore(e.consul.Client, "")
	e.hostID = fmt.Sprintf("h%d", time.Now().UnixNano()%1e9)
	e.dataDir = t.TempDir()
	t.Cleanup(func() { e.docker.RemoveContainers(t, hostd.LabelHost, e.hostID) })
	return e
}

// newConsul is testenv.NewConsul, tried again with other ports when the agent could not
// bind the ones it was given: testenv.FreePort hands out ports of the ephemeral range, and
// the outgoing connections of the tests running alongside (Consul's checks, clients) now
// and then take one before the agent binds it.
func newConsul(t *testing.T, opts ...testenv.ConsulOption) *testenv.Consul {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := tryConsul(t, opts)
		if err == nil {
			return c
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("consul could not bind its ports (attempt %d); trying others", attempt)
	}
}

// tryConsul calls testenv.NewConsul with a testing.TB whose Fatalf, during the call only,
// returns the failure as an error.
func tryConsul(t *testing.T, opts []testenv.ConsulOption) (c *testenv.Consul, err error) {
	tb := &fatalAsError{TB: t, armed: true}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = errors.New(string(f))
		}
	}()
	c = testenv.NewConsul(tb, opts...)
	tb.armed = false
	return c, nil
}

type fatal string

type fatalAsError struct {
	testing.TB
	armed bool
}

func (f *fatalAsError) Fatalf(format string, args ...any) {
	if f.armed {
		panic(fatal(fmt.Sprintf(format, args...)))
	}
	f.TB.Fatalf(format, args...)
}

func (f *fatalAsError) Fatal(args ...any) {
	if f.armed {
		panic(fatal(fmt.Sprint(args...)))
	}
	f.TB.Fatal(args...)
}

// config is a host daemon's configuration with the short timings tests run with. Its
// logger writes to the test's output and records every message in e.logs.
func (e *env) config(t *testing.T) hostd.Config {
	e.logs = newLogRecorder(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	return hostd.Config{
		ID: e.hostID, Advertise: "127.0.0.1", DataDir: e.dataDir,
		Labels:   map[string]string{"zone": "test"},
		Capacity: state.Resources{CPU: 2000, Memory: 1 << 30},
		Logger:   slog.New(e.logs),
		HostTTL:  3 * time.Second, DeregisterAfter: time.Minute, StopTimeout: 2 * time.Second,
		Resync: time.Second, OrphanGrace: 3 * time.Second, StableAfter: 10 * time.Second,
		PullBackoff:    hostd.Backoff{Min: 300 * time.Millisecond, Max: 3 * time.Second},
		ConsulBackoff:  hostd.Backoff{Min: 100 * time.Millisecond, Max: time.Second},
		ConsulTimeout:  2 * time.Second,
		StatusInterval: 200 * time.Millisecond,
	}
}

// run runs a host daemon in this process until the returned stop is called (or the test
// ends).
func (e *env) run(t *testing.T, cfg hostd.Config, docker hostd.Docker) (stop func()) {
	t.Helper()
	if docker == nil {
		docker = e.docker.Client
	}
	d, err := hostd.New(cfg, e.store, docker)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// release stores a release of the test app (service demo-web, HTTP check on /healthz),
// changed by change.
func (e *env) release(t *testing.T, message string, change func(*state.Release)) *state.Release {
	t.Helper()
	r := &state.Release{
		Formation: "demo", Service: "web", Image: e.image,
		Env:     map[string]string{"MESSAGE": message},
		Ports:   []state.Port{{Port: 8080}},
		Check:   state.Check{Type: "http", Path: "/healthz", Interval: time.Second, Timeout: time.Second},
		Restart: state.Restart{MinBackoff: 250 * time.Millisecond, MaxBackoff: 2 * time.Second},
		Commit:  "c0ffee",
	}
	if change != nil {
		change(r)
	}
	r.ID = r.ComputeID()
	if err := e.store.PutRelease(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

// instances are the first n instances of a release.
func instances(r *state.Release, n int) []state.Instance {
	d := state.Desired{Formation: r.Formation, Services: map[string]state.DesiredService{
		r.Service: {Deployments: []state.Deployment{{Release: r.ID, Scale: n}}},
	}}
	return d.Instances()
}

// assign writes the host's assignment, as the control plane does.
func (e *env) assign(t *testing.T, insts ...[]state.Instance) {
	t.Helper()
	ctx := context.Background()
	_, index, err := e.store.Assignment(ctx, e.hostID)
	if err != nil {
		t.Fatal(err)
	}
	a := &state.Assignment{Host: e.hostID, Instances: []state.Instance{}, Updated: time.Now().UTC()}
	for _, list := range insts {
		a.Instances = append(a.Instances, list...)
	}
	if err := e.store.WriteAssignments(ctx, []*state.Assignment{a}, map[string]uint64{e.hostID: index}); err != nil {
		t.Fatal(err)
	}
}

// containers lists the host's containers by instance.
func (e *env) containers(t *testing.T) map[string]container.Summary {
	t.Helper()
	list, err := e.docker.Client.ContainerList(context.Background(), container.ListOptions{
		All: true, Filters: filters.NewArgs(filters.Arg("label", hostd.LabelHost+"="+e.hostID)),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]container.Summary{}
	for _, c := range list {
		out[c.Labels[hostd.LabelInstance]] = c
	}
	return out
}

// passing returns the addresses of the passing instances of a service, by instance ID.
func (e *env) passing(service string) map[string]string {
	entries, _, err := e.consul.Client.Health().Service(service, "", true, nil)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, en := range entries {
		out[en.Service.Meta["instance"]] = fmt.Sprintf("%s:%d", en.Service.Address, en.Service.Port)
	}
	return out
}

// allPassing says whether exactly the instances insts pass, each answering message.
func (e *env) allPassing(insts []state.Instance, message string) bool {
	addrs := e.passing("demo-web")
	if len(addrs) != len(insts) {
		return false
	}
	for _, inst := range insts {
		a, ok := addrs[inst.ID]
		if !ok || (message != "" && testenv.HTTPGet("http://"+a+"/") != message) {
			return false
		}
	}
	return true
}

func (e *env) status(t *testing.T) *state.HostStatus {
	t.Helper()
	st, err := e.store.HostStatus(context.Background(), e.hostID)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// instanceStatus is one instance's status in a host's; false when absent.
func instanceStatus(st *state.HostStatus, id string) (state.InstanceStatus, bool) {
	if st == nil {
		return state.InstanceStatus{}, false
	}
	for _, in := range st.Instances {
		if in.ID == id {
			return in, true
		}
	}
	return state.InstanceStatus{}, false
}

func TestConvergeStartsRegistersAndReplaces(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run(t, e.config(t), nil)
	ctx := context.Background()

	r1 := e.release(t, "one", func(r *state.Release) {
		r.Env["EXTRA"] = "from-the-release"
		r.Resources = state.Resources{CPU: 500, Memory: 64 << 20}
	})
	one := instances(r1, 2)
	e.assign(t, one)
	testenv.Eventually(t, 60*time.Second, "2 passing instances of release one", func() bool { return e.allPassing(one, "one") })

	// The containers are what the release says: labels, env, a dynamic host port on the
	// advertised address, CPU shares and a memory limit, no restart policy of the engine's.
	for _, inst := range one {
		c := e.containers(t)[inst.ID]
		info, err := e.docker.Client.ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		labels := info.Config.Labels
		if labels[hostd.LabelRelease] != r1.ID || labels[hostd.LabelFormation] != "demo" || labels[hostd.LabelService] != "web" || labels[hostd.LabelManaged] != "gilliam-sync" {
			t.Errorf("labels: %v", labels)
		}
		for _, kv := range []string{"EXTRA=from-the-release", "PORT=8080", "GILLIAM_INSTANCE=" + inst.ID, "GILLIAM_HOST=" + e.hostID} {
			if !slices.Contains(info.Config.Env, kv) {
				t.Errorf("env %v lacks %s", info.Config.Env, kv)
			}
		}
		if hc := info.HostConfig; hc.CPUShares != 512 || hc.Memory != 64<<20 || hc.RestartPolicy.Name != container.RestartPolicyDisabled {
			t.Errorf("resources: shares %d memory %d restart %q", hc.CPUShares, hc.Memory, hc.RestartPolicy.Name)
		}
		b := info.NetworkSettings.Ports["8080/tcp"]
		if len(b) != 1 || b[0].HostIP != "127.0.0.1" || b[0].HostPort == "" || b[0].HostPort == "8080" && len(one) > 1 {
			t.Errorf("port bindings: %+v", b)
		}
	}
	// The registration: tags, meta, address and mapped port, the release's check (its
	// DeregisterCriticalServiceAfter, which the agent does not show, is in the golden
	// registration of TestRegistrationGolden).
	svcs, err := e.consul.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	hcs, _, err := e.consul.Client.Health().Checks("demo-web", nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]*api.HealthCheck{}
	for _, c := range hcs {
		checks[c.CheckID] = c
	}
	for _, inst := range one {
		s := svcs[state.RegistrationID(e.hostID, inst.ID)]
		if s == nil {
			t.Fatalf("%s not registered", inst.ID)
		}
		c := e.containers(t)[inst.ID]
		if s.Service != "demo-web" || s.Address != "127.0.0.1" || s.Port != int(c.Ports[0].PublicPort) ||
			!slices.Contains(s.Tags, "release-"+r1.ID) || s.Meta["commit"] != "c0ffee" || s.Meta["image"] != e.image ||
			s.Meta["host"] != e.hostID || s.Meta["instance"] != inst.ID {
			t.Errorf("registration %+v", s)
		}
		ch := checks[state.CheckID(e.hostID, inst.ID)]
		if ch == nil || ch.Type != "http" || !strings.Contains(ch.Output, fmt.Sprintf("GET http://127.0.0.1:%d/healthz", s.Port)) {
			t.Errorf("check %+v", ch)
		}
	}

	// A new release replaces the old: new containers answer, the old are gone from Docker
	// and from Consul.
	r2 := e.release(t, "two", nil)
	two := instances(r2, 2)
	e.assign(t, two)
	testenv.Eventually(t, 60*time.Second, "2 passing instances of release two, none of one", func() bool { return e.allPassing(two, "two") })
	testenv.Eventually(t, 30*time.Second, "the old containers to be removed", func() bool {
		for _, c := range e.containers(t) {
			if c.Labels[hostd.LabelRelease] == r1.ID {
				return false
			}
		}
		return true
	})
	svcs, _ = e.consul.Client.Agent().Services()
	for id, s := range svcs {
		if s.Meta["release"] == r1.ID {
			t.Errorf("old instance %s still registered", id)
		}
	}

	testenv.Eventually(t, 10*time.Second, "status of the two instances of release two, running and passing", func() bool {
		st := e.status(t)
		if st == nil || len(st.Instances) != 2 {
			return false
		}
		for _, in := range st.Instances {
			if in.Release != r2.ID || in.State != "running" || !strings.HasPrefix(in.Address, "127.0.0.1:") || !in.Registered || in.Health != api.HealthPassing {
				return false
			}
		}
		return true
	})
}

func TestHostRegistersItsLiveness(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run(t, e.config(t), nil)
	testenv.Eventually(t, 20*time.Second, "the host passing in the catalog", func() bool {
		hosts, err := e.store.Hosts(context.Background())
		return err == nil && len(hosts) == 1 && hosts[0].ID == e.hostID && hosts[0].Passing &&
			hosts[0].Labels["zone"] == "test" && hosts[0].Capacity.CPU == 2000
	})
	checks, _ := e.consul.Client.Agent().Checks()
	if c := checks[state.HostCheckID(e.hostID)]; c == nil || c.Status != api.HealthPassing {
		t.Fatalf("host check: %+v", c)
	}
}
