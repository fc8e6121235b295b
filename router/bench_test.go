package router

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// BenchmarkRouterVsDirect measures, side by side in one run, one instance served directly
// and through the router (access log on, to a discarding JSON handler): the most each
// serves with 32 workers, then latency at a constant 1,000 req/s. The load generator, the
// router and the instance share the machine's cores. Run with -benchtime 1x: one
// iteration is the whole measurement.
func BenchmarkRouterVsDirect(b *testing.B) {
	c := testenv.NewConsul(b)
	e := newEnv(b, c.Client, func(cfg *Config) { cfg.Logger = nil; cfg.AccessLog = discardJSON() })
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}))
	defer inst.Close()
	b.Cleanup(inst.Close)
	be := &backend{name: "bench", srv: inst}
	be.register(b, c.Client, "bench", "web", regOpts{ttl: true})
	e.waitBackends("bench.localhost", 1)
	direct := target{url: inst.URL + "/"}
	routed := target{url: "http://" + e.addr + "/", host: "bench.localhost"}

	for range b.N {
		var report strings.Builder
		client := newLoadClient()
		closedLoop(client, direct, 32, 500*time.Millisecond) // warm up both paths
		closedLoop(client, routed, 32, 500*time.Millisecond)
		// Interleaved, so that the other work on the machine weighs on both alike.
		dMax, rMax := &loadResult{statuses: map[int]int{}}, &loadResult{statuses: map[int]int{}}
		d1k, r1k := &loadResult{statuses: map[int]int{}}, &loadResult{statuses: map[int]int{}}
		var dCPU, rCPU time.Duration // process CPU (user+system): the cost, whatever the load
		for range 6 {
			c0 := cpuTime()
			dMax.merge(closedLoop(client, direct, 32, 500*time.Millisecond))
			c1 := cpuTime()
			rMax.merge(closedLoop(client, routed, 32, 500*time.Millisecond))
			dCPU, rCPU = dCPU+c1-c0, rCPU+cpuTime()-c1
		}
		for range 5 {
			d1k.merge(constantRate(timeout(time.Second), client, direct, 1000))
			r1k.merge(constantRate(timeout(time.Second), client, routed, 1000))
		}
		dRate, rRate := float64(dMax.ok)/dMax.elapsed.Seconds(), float64(rMax.ok)/rMax.elapsed.Seconds()
		fmt.Fprintf(&report, "router vs direct, loopback, %d cores shared by load generator, router and instance\n", numCPU())
		fmt.Fprintf(&report, "  max throughput, 32 workers, 3s (6 x 0.5s, interleaved): direct %.0f req/s, router %.0f req/s (%.0f%% of direct)\n", dRate, rRate, 100*rRate/dRate)
		dPer, rPer := dCPU/time.Duration(max(dMax.sent, 1)), rCPU/time.Duration(max(rMax.sent, 1))
		fmt.Fprintf(&report, "  CPU per request (load generator + instance, + router): direct %s, router %s, the router's share %s\n",
			dPer.Round(100*time.Nanosecond), rPer.Round(100*time.Nanosecond), (rPer - dPer).Round(100*time.Nanosecond))
		fmt.Fprintf(&report, "  at 1000 req/s, 5s (5 x 1s, interleaved): direct p50 %s p99 %s; router p50 %s p99 %s; added p99 %s\n",
			d1k.percentile(0.5).Round(time.Microsecond), d1k.percentile(0.99).Round(time.Microsecond),
			r1k.percentile(0.5).Round(time.Microsecond), r1k.percentile(0.99).Round(time.Microsecond),
			(r1k.percentile(0.99) - d1k.percentile(0.99)).Round(time.Microsecond))
		fmt.Fprintf(&report, "  direct max: %s\n  router max: %s\n  direct 1k: %s\n  router 1k: %s", dMax, rMax, d1k, r1k)
		testenv.Report(b, "router-bench", report.String())
		b.ReportMetric(dRate, "direct-req/s")
		b.ReportMetric(rRate, "router-req/s")
		b.ReportMetric(float64(r1k.percentile(0.99)-d1k.percentile(0.99))/float64(time.Millisecond), "added-p99-ms")
		b.ReportMetric(float64(rPer-dPer)/float64(time.Microsecond), "router-cpu-µs/req")
		for _, r := range []*loadResult{dMax, rMax, d1k, r1k} {
			if len(r.errors) > 0 || r.ok != r.sent {
				b.Errorf("failed requests: %s; errors %v", r, r.errors[:min(3, len(r.errors))])
			}
		}
	}
}

// BenchmarkRouteConvergence measures the time from a health change in Consul (a TTL check
// set passing or critical through the agent) to the router's table reflecting it, over 100
// changes. Run with -benchtime 1x.
func BenchmarkRouteConvergence(b *testing.B) {
	c := testenv.NewConsul(b)
	e := newEnv(b, c.Client, func(cfg *Config) { cfg.Logger = nil; cfg.MinDelay = 0 })
	one, two := newBackend(b, "one", nil), newBackend(b, "two", nil)
	one.register(b, c.Client, "conv", "web", regOpts{ttl: true})
	two.register(b, c.Client, "conv", "web", regOpts{ttl: true})
	e.waitBackends("conv.localhost", 2)
	for range b.N {
		var lat []time.Duration
		for i := range 100 {
			status, want := api.HealthCritical, 1
			if i%2 == 1 {
				status, want = api.HealthPassing, 2
			}
			drain(e.swaps)
			t0 := time.Now()
			if err := c.Client.Agent().UpdateTTL("check-"+one.id, "", status); err != nil {
				b.Fatal(err)
			}
			deadline := time.After(10 * time.Second)
		wait:
			for {
				select {
				case tab := <-e.swaps:
					if r := tab.Lookup("conv.localhost"); r != nil && len(r.Backends) == want {
						lat = append(lat, time.Since(t0))
						break wait
					}
				case <-deadline:
					b.Fatalf("change %d not in the table after 10s", i)
				}
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := func(q float64) time.Duration {
			return lat[min(len(lat)-1, int(q*float64(len(lat))))].Round(10 * time.Microsecond)
		}
		testenv.Report(b, "router-convergence", fmt.Sprintf(
			"router route convergence over %d health changes (TTL check via the agent -> table swapped): p50 %s, p99 %s, max %s",
			len(lat), p(0.5), p(0.99), lat[len(lat)-1].Round(10*time.Microsecond)))
		b.ReportMetric(float64(p(0.5))/float64(time.Millisecond), "p50-ms")
		b.ReportMetric(float64(p(0.99))/float64(time.Millisecond), "p99-ms")
	}
}

func drain(c chan *Table) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func timeout(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = cancel // released when d passes
	return ctx
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
