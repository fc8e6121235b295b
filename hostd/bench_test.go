package hostd

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// BenchmarkConverge50 measures, in the same run, the time from an assignment of 50
// instances written to Consul to all 50 passing their checks in Consul, against the time
// to create and start the same 50 containers straight through the Docker API, all at once,
// until each answers its health check. It reports both and their ratio (target: at most
// 1.5). Run it with: go test -run '^$' -bench Converge50 -benchtime 3x ./hostd
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
	b.Cleanup(func() { docker.RemoveContainers(b, LabelHost, host) })

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

	// direct creates and starts the containers the host daemon would, all at once, and
	// waits for each to answer its health check.
	direct := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for _, inst := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg, hc := containerSpec(host, "127.0.0.1", inst, rel, privileges{})
				c, err := docker.Client.ContainerCreate(ctx, cfg, hc, nil, nil, state.ContainerName(host, inst.ID))
				if err == nil {
					err = docker.Client.ContainerStart(ctx, c.ID, container.StartOptions{})
				}
				var info container.InspectResponse
				if err == nil {
					info, err = docker.Client.ContainerInspect(ctx, c.ID)
				}
				if err != nil {
					errs <- err
					return
				}
				url := fmt.Sprintf("http://127.0.0.1:%s/healthz", info.NetworkSettings.Ports["8080/tcp"][0].HostPort)
				for !healthy(url) {
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		docker.RemoveContainers(b, LabelHost, host)
		return took
	}

	// converge writes the assignment and waits for all 50 to pass in Consul.
	converge := func() time.Duration {
		start := time.Now()
		assign(insts)
		until("50 passing instances", func() bool {
			entries, _, err := consul.Client.Health().Service("bench-web", "", true, nil)
			return err == nil && len(entries) == n
		})
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

func healthy(url string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
