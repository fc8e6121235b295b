package hostd_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// env is a host daemon under test with everything real around it.
type env struct {
	consul *testenv.Consul
	docker *testenv.Docker
	store  *state.Store
	image  string // the test app, in the registry, by digest
	hostID string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{consul: testenv.NewConsul(t), docker: testenv.NewDocker(t)}
	reg := testenv.NewRegistry(t)
	e.image = testenv.PushImage(t, e.docker.TestImage(t), reg.Addr+"/test/app")
	e.store = state.NewStore(e.consul.Client, "")
	e.hostID = fmt.Sprintf("h%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() { e.docker.RemoveContainers(t, hostd.LabelHost, e.hostID) })
	return e
}

func (e *env) start(t *testing.T) context.CancelFunc {
	t.Helper()
	d, err := hostd.New(hostd.Config{
		ID: e.hostID, Advertise: "127.0.0.1", DataDir: t.TempDir(), Resync: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, e.store, e.docker.Client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func (e *env) release(t *testing.T, message string) *state.Release {
	t.Helper()
	r := &state.Release{
		Formation: "demo", Service: "web", Image: e.image,
		Env:   map[string]string{"MESSAGE": message},
		Ports: []state.Port{{Port: 8080}},
		Check: state.Check{Type: "http", Path: "/healthz", Interval: time.Second, Timeout: time.Second},
	}
	r.ID = r.ComputeID()
	if err := e.store.PutRelease(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) assign(t *testing.T, d *state.Desired) {
	t.Helper()
	ctx := context.Background()
	_, index, err := e.store.Assignment(ctx, e.hostID)
	if err != nil {
		t.Fatal(err)
	}
	a := &state.Assignment{Host: e.hostID, Instances: d.Instances()}
	if err := e.store.WriteAssignments(ctx, []*state.Assignment{a}, map[string]uint64{e.hostID: index}); err != nil {
		t.Fatal(err)
	}
}

// passing returns the addresses of the passing instances of the demo-web service.
func (e *env) passing() []string {
	entries, _, err := e.consul.Client.Health().Service("demo-web", "", true, nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, en := range entries {
		out = append(out, fmt.Sprintf("%s:%d", en.Service.Address, en.Service.Port))
	}
	return out
}

func TestConvergeStartsRegistersAndReplaces(t *testing.T) {
	e := newEnv(t)
	e.start(t)

	// A container without our labels lives on the same engine and must never be touched.
	ctx := context.Background()
	stranger, err := e.docker.Client.ContainerCreate(ctx, &container.Config{Image: e.docker.TestImage(t), Labels: e.docker.Label}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.docker.Client.ContainerStart(ctx, stranger.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}

	r1 := e.release(t, "one")
	e.assign(t, &state.Desired{Formation: "demo", Services: map[string]state.DesiredService{"web": {Deployments: []state.Deployment{{Release: r1.ID, Scale: 2}}}}})
	testenv.Eventually(t, 60*time.Second, "2 passing instances of release one", func() bool {
		addrs := e.passing()
		if len(addrs) != 2 {
			return false
		}
		for _, a := range addrs {
			if testenv.HTTPGet("http://"+a+"/") != "one" {
				return false
			}
		}
		return true
	})

	// A new release replaces the old: new containers answer, the old are gone from Docker
	// and from Consul.
	r2 := e.release(t, "two")
	e.assign(t, &state.Desired{Formation: "demo", Services: map[string]state.DesiredService{"web": {Deployments: []state.Deployment{{Release: r2.ID, Scale: 2}}}}})
	testenv.Eventually(t, 60*time.Second, "2 passing instances of release two, none of one", func() bool {
		addrs := e.passing()
		if len(addrs) != 2 {
			return false
		}
		for _, a := range addrs {
			if testenv.HTTPGet("http://"+a+"/") != "two" {
				return false
			}
		}
		return true
	})
	testenv.Eventually(t, 30*time.Second, "the old containers to be removed", func() bool {
		list, _ := e.docker.Client.ContainerList(ctx, container.ListOptions{All: true})
		for _, c := range list {
			if c.Labels[hostd.LabelRelease] == r1.ID {
				return false
			}
		}
		return true
	})
	svcs, _ := e.consul.Client.Agent().Services()
	for id, s := range svcs {
		if s.Meta["release"] == r1.ID {
			t.Errorf("old instance %s still registered", id)
		}
	}

	info, err := e.docker.Client.ContainerInspect(ctx, stranger.ID)
	if err != nil || !info.State.Running {
		t.Fatalf("the unlabelled container was touched: %v %+v", err, info.State)
	}

	st, err := e.store.HostStatus(ctx, e.hostID)
	if err != nil || st == nil || len(st.Instances) != 2 {
		t.Fatalf("host status: %+v %v", st, err)
	}
	for _, in := range st.Instances {
		if in.Release != r2.ID || in.State != "running" || !strings.HasPrefix(in.Address, "127.0.0.1:") {
			t.Errorf("instance status %+v", in)
		}
	}
}

func TestHostRegistersItsLiveness(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	testenv.Eventually(t, 20*time.Second, "the host passing in the catalog", func() bool {
		hosts, err := e.store.Hosts(context.Background())
		return err == nil && len(hosts) == 1 && hosts[0].ID == e.hostID && hosts[0].Passing
	})
	checks, _ := e.consul.Client.Agent().Checks()
	if c := checks[state.HostCheckID(e.hostID)]; c == nil || c.Status != api.HealthPassing {
		t.Fatalf("host check: %+v", c)
	}
}
