package hostd_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// snapshot is what must not change across restarts of the host daemon: each instance's
// container, when it started, how often the engine restarted it, and its registration.
type snapshot struct {
	container, started string
	restarts           int
	port               int
	registration       string // MetaRegistration
}

func (e *env) snapshot(t *testing.T) map[string]snapshot {
	t.Helper()
	ctx := context.Background()
	svcs, err := e.consul.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]snapshot{}
	for id, c := range e.containers(t) {
		info, err := e.docker.Client.ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		s := snapshot{container: c.ID, started: info.State.StartedAt, restarts: info.RestartCount}
		if reg := svcs[state.RegistrationID(e.hostID, id)]; reg != nil {
			s.port, s.registration = reg.Port, reg.Meta[hostd.MetaRegistration]
		}
		out[id] = s
	}
	return out
}

// containerEvents records what the engine does to the host's containers from now on.
func (e *env) containerEvents(t *testing.T) func() []events.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	msgs, errs := e.docker.Client.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("label", hostd.LabelHost+"="+e.hostID))})
	var mu sync.Mutex
	var got []events.Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-msgs:
				mu.Lock()
				got = append(got, m)
				mu.Unlock()
			case <-errs:
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []events.Message {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// The acceptance test of adoption: the host daemon runs as a real process and is killed
// with SIGKILL ten times while five instances run, at different moments (during its start,
// once converged); each time it comes back, it adopts the containers: same containers,
// never restarted, registrations untouched.
func TestKillDaemonTenTimes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bin := testenv.Binary(t)
	start := func() *testenv.Process {
		return testenv.Start(t, e.consul.Env(), bin, "host", "--id", e.hostID, "--advertise", "127.0.0.1",
			"--data", e.dataDir, "--log-format", "json", "--resync", "1s", "--ttl", "3s", "--orphan-grace", "3s")
	}
	rel := e.release(t, "steady", nil)
	five := instances(rel, 5)
	e.assign(t, five)
	p := start()
	p.WaitLog(60*time.Second, "converged", "instances=5")
	testenv.Eventually(t, 30*time.Second, "5 passing instances", func() bool { return e.allPassing(five, "steady") })
	before := e.snapshot(t)
	if len(before) != 5 {
		t.Fatalf("containers: %v", before)
	}
	seen := e.containerEvents(t)

	var later []*testenv.Process
	for i := range 10 {
		if i%2 == 0 {
			time.Sleep(time.Duration(i*40) * time.Millisecond) // somewhere in its start
		} else {
			p.WaitLog(30*time.Second, "converged", "instances=5")
		}
		p.Kill()
		p = start()
		later = append(later, p)
	}
	p.WaitLog(30*time.Second, "converged", "instances=5")
	testenv.Eventually(t, 10*time.Second, "5 passing instances", func() bool { return e.allPassing(five, "steady") })

	if after := e.snapshot(t); !maps.Equal(before, after) {
		t.Errorf("containers or registrations changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, m := range seen() {
		t.Errorf("the engine saw %s of %s", m.Action, m.Actor.Attributes[hostd.LabelInstance])
	}
	for i, p := range later {
		for _, msg := range []string{"instance started", "instance registered in Consul", "instance deregistered from Consul", "instance stopped", "host registered in Consul"} {
			if n := len(p.Logs(msg)); n > 0 {
				t.Errorf("daemon %d: %d× %q", i+1, n, msg)
			}
		}
	}
}

// A host daemon that starts while Consul is away runs the assignment it persisted: a
// container removed meanwhile is made again from the persisted release, a stopped one is
// started, the others are left alone; when Consul returns, the registrations follow.
func TestStartWithConsulDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ConsulPersistent())
	cfg := e.config(t)
	rel := e.release(t, "persisted", nil)
	three := instances(rel, 3)
	e.assign(t, three)
	stop := e.run(t, cfg, nil)
	testenv.Eventually(t, 60*time.Second, "3 passing instances", func() bool { return e.allPassing(three, "persisted") })
	stop()
	before := e.snapshot(t)
	e.consul.Stop()

	ctx := context.Background()
	gone, stopped, kept := three[0].ID, three[1].ID, three[2].ID
	if err := e.docker.Client.ContainerRemove(ctx, before[gone].container, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.docker.Client.ContainerStop(ctx, before[stopped].container, container.StopOptions{}); err != nil {
		t.Fatal(err)
	}

	e.run(t, cfg, nil)
	testenv.Eventually(t, 30*time.Second, "the three instances running again without Consul", func() bool {
		cs := e.containers(t)
		return len(cs) == 3 && cs[gone].State == "running" && cs[gone].ID != before[gone].container &&
			cs[stopped].State == "running" && cs[stopped].ID == before[stopped].container
	})
	info, err := e.docker.Client.ContainerInspect(ctx, before[kept].container)
	if err != nil || info.State.StartedAt != before[kept].started {
		t.Fatalf("the running instance was touched: %v %+v", err, info.State)
	}

	e.consul.Start()
	testenv.Eventually(t, 30*time.Second, "3 passing instances once Consul is back", func() bool { return e.allPassing(three, "persisted") })
}

// Say what a snapshot is in failure messages.
func (s snapshot) String() string {
	return fmt.Sprintf("{%s started %s restarts %d port %d reg %s}", s.container[:12], s.started, s.restarts, s.port, s.registration)
}
