package hostd

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// BenchmarkConverge50 measures, in the same run, two ways to the same end: 50 instances
// running and passing their HTTP checks in Consul. The host daemon's way: from an assignment
// of 50 instances written to Consul to all 50 of its registrations passing. The baseline:
// the same 50 containers (same spec) created and started straight through the Docker API,
// all at once, each registered with the same Consul registration as soon as it runs, until
// all 50 pass. Both stop when Consul says passing, so the ratio is the host daemon's cost
// (watching, deciding, pulling checks, eight starts at a time) over doing the same work by
// hand; it reports both and their ratio (target: at most 1.5). Run it with:
// go test -run '^$' -bench Converge50 -benchtime 3x ./hostd
func BenchmarkConverge50(b *testing.B) {
	const n = 50
	consul := testenv.NewConsul(b)
	docker := testenv.NewDocker(b)
	docker.Client.NegotiateAPIVersion(context.Background())
	registry := testenv.NewRegistry(b)
	image := testenv.PushImage(b, docker.TestImage(b), registry.Addr+"/bench/app")
	docker.PullImage(b, image) // both sides start from an image in the engine
	store := state.NewStore(consul.Client, "")
	host := fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9)
	// The baseline's containers and registrations carry another host's name, so the host
	// daemon, which touches only its own, leaves them alone.
	directHost := host + "-direct"
	b.Cleanup(func() {
		docker.RemoveContainers(b, LabelHost, host)
		docker.RemoveContainers(b, LabelHost, directHost)
	})

	rel := &state.Release{
		Formation: "bench", Service: "web", Image: image, Env: map[string]string{"MESSAGE": "bench"},
		Ports: []state.Port{{Port: 8080}},
		Check: state.Check{Type: "http", Path: "/healthz", Interval: time.Second, Timeout: time.Second},
	}
	rel.ID = rel.ComputeID()
	ctx := context.Background()
	if err := store.PutRelease(ctx, rel); err != nil {
		b.Fatal(err)
	}
	desired := state.Desired{Formation: "bench", Services: map[string]state.DesiredService{
		"web": {Deployments: []state.Deployment{{Release: rel.ID, Scale: n}}}}}
	insts := desired.Instances()

	d, err := New(Config{ID: host, Advertise: "127.0.0.1", DataDir: b.TempDir(), StopTimeout: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}, store, docker.Client)
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(runCtx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })

	assign := func(instances []state.Instance) {
		_, index, err := store.Assignment(ctx, host)
		if err != nil {
			b.Fatal(err)
		}
		a := &state.Assignment{Host: host, Instances: instances, Updated: time.Now().UTC()}
		if err := store.WriteAssignments(ctx, []*state.Assignment{a}, map[string]uint64{host: index}); err != nil {
			b.Fatal(err)
		}
	}
	ours := func() int {
		list, err := docker.Client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelHost+"="+host))})
		if err != nil {
			b.Fatal(err)
		}
		return len(list)
	}
	until := func(what string, cond func() bool) {
		deadline := time.Now().Add(5 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// passing counts the passing registrations of bench-web made for host h.
	passing := func(h string) int {
		entries, _, err := consul.Client.Health().Service("bench-web", "", true, nil)
		if err != nil {
			return -1
		}
		count := 0
		for _, e := range entries {
			if e.Service.Meta["host"] == h {
				count++
			}
		}
		return count
	}

	// direct creates and starts the containers the host daemon would, all at once,
	// registers each in Consul as the host daemon would once it runs, and waits for all 50
	// to pass.
	direct := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, inst := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg, hc := containerSpec(directHost, "127.0.0.1", inst, rel, privileges{})
				c, err := docker.Client.ContainerCreate(ctx, cfg, hc, nil, nil, state.ContainerName(directHost, inst.ID))
				if err == nil {
					err = docker.Client.ContainerStart(ctx, c.ID, container.StartOptions{})
				}
				var info container.InspectResponse
				if err == nil {
					info, err = docker.Client.ContainerInspect(ctx, c.ID)
				}
				var port int
				if err == nil {
					port, err = strconv.Atoi(info.NetworkSettings.Ports["8080/tcp"][0].HostPort)
				}
				if err == nil {
					err = consul.Client.Agent().ServiceRegister(registration("gilliam", directHost, "127.0.0.1", inst, rel, port, time.Minute))
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		until("50 passing instances started directly", func() bool { return passing(directHost) == n })
		took := time.Since(start)
		for _, inst := range insts {
			if err := consul.Client.Agent().ServiceDeregister(state.RegistrationID(directHost, inst.ID)); err != nil {
				b.Fatal(err)
			}
		}
		docker.RemoveContainers(b, LabelHost, directHost)
		return took
	}

	// converge writes the assignment and waits for all 50 to pass in Consul.
	converge := func() time.Duration {
		start := time.Now()
		assign(insts)
		until("50 passing instances of the host daemon", func() bool { return passing(host) == n })
		took := time.Since(start)
		assign([]state.Instance{})
		until("the instances gone", func() bool {
			svcs, err := consul.Client.Agent().Services()
			return err == nil && len(svcs) <= 1 && ours() == 0 // the host's own registration stays
		})
		return took
	}

	var directTotal, hostdTotal time.Duration
	b.ResetTimer()
	for range b.N {
		directTotal += direct()
		hostdTotal += converge()
	}
	b.StopTimer()
	perOp := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(perOp(directTotal), "direct-s/op")
	b.ReportMetric(perOp(hostdTotal), "hostd-s/op")
	b.ReportMetric(hostdTotal.Seconds()/directTotal.Seconds(), "ratio")
	b.ReportMetric(0, "ns/op")
}
