package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Benchmarks on made-up clusters that look like a real one: hosts of 16 cores and 64 GiB in
// three zones, some with SSDs; services of mixed scale and size, some constrained, some
// spread over zones, some on distinct hosts. The same seed makes the same cluster.

type benchCluster struct {
	desired []Instance
	hosts   []Host
}

// makeCluster makes hosts and services until it has the instances asked for, each
// service's scale drawn from scales.
func makeCluster(instances, hosts int, scales []int) benchCluster {
	rng := rand.New(rand.NewPCG(1, 2))
	var c benchCluster
	for i := range hosts {
		labels := map[string]string{"zone": fmt.Sprintf("z%d", i%3)}
		if i%4 == 0 {
			labels["disk"] = "ssd"
		}
		c.hosts = append(c.hosts, Host{ID: fmt.Sprintf("host-%05d", i), Capacity: Resources{CPU: 16000, Memory: 64 * gib}, Labels: labels})
	}
	for s := 0; len(c.desired) < instances; s++ {
		n := min(scales[rng.IntN(len(scales))], instances-len(c.desired))
		res := Resources{
			CPU:    []int64{100, 250, 500, 1000}[rng.IntN(4)],
			Memory: []int64{gib / 8, gib / 2, gib, 2 * gib}[rng.IntN(4)],
		}
		var opts []func(*Instance)
		switch rng.IntN(10) {
		case 0:
			opts = append(opts, constrained(Constraint{"disk", OpEqual, "ssd"}))
		case 1:
			opts = append(opts, constrained(Constraint{"zone", OpRegexp, "^z[01]$"}))
		case 2, 3:
			opts = append(opts, spreadOver("zone"))
		case 4:
			opts = append(opts, distinct)
		}
		c.desired = append(c.desired, scale(fmt.Sprintf("f%d", s/8), fmt.Sprintf("s%d", s), "r1", n, res, opts...)...)
	}
	return c
}

var mixedScales = []int{1, 2, 3, 5, 10, 20, 50}

func benchPlan(b *testing.B, desired []Instance, hosts []Host, current map[string][]string) Result {
	b.Helper()
	b.ReportAllocs()
	var r Result
	for b.Loop() {
		r = Plan(desired, hosts, current, now, Options{DeadAfter: time.Minute})
	}
	b.ReportMetric(float64(len(r.Changed)), "changed-hosts")
	b.ReportMetric(float64(len(r.Unplaced)), "unplaced")
	return r
}

// BenchmarkPlan places a whole cluster from nothing: the first plan, or the worst case.
func BenchmarkPlan(b *testing.B) {
	for _, size := range []struct {
		name             string
		instances, hosts int
		scales           []int
	}{
		{"10k-instances-1k-hosts", 10_000, 1_000, mixedScales},
		{"100k-instances-5k-hosts", 100_000, 5_000, mixedScales},
		// Every service at scale 1 (think previews): as many groups as instances, the worst
		// case for scanning hosts once per group.
		{"100k-scale-1-5k-hosts", 100_000, 5_000, []int{1}},
		// One huge service: a few groups, hosts taken many rounds over.
		{"100k-scale-10k-5k-hosts", 100_000, 5_000, []int{10_000}},
	} {
		c := makeCluster(size.instances, size.hosts, size.scales)
		b.Run(size.name, func(b *testing.B) { benchPlan(b, c.desired, c.hosts, nil) })
	}
}

// BenchmarkReplan plans again after a small change to a settled 10,000-instance cluster:
// the plan the daemon runs on every commit. changed-hosts is how many host documents the
// caller must write.
func BenchmarkReplan(b *testing.B) {
	c := makeCluster(10_000, 1_000, mixedScales)
	settled := asCurrent(Plan(c.desired, c.hosts, nil, now, Options{DeadAfter: time.Minute}))

	// The service changed below: the first of scale 10 without constraints.
	count := make(map[svcKey]int)
	for _, in := range c.desired {
		count[svcKey{in.Formation, in.Service}]++
	}
	var svc Instance
	for _, in := range c.desired {
		if count[svcKey{in.Formation, in.Service}] == 10 && len(in.Constraints) == 0 {
			svc = in
			break
		}
	}
	like := func(in *Instance) {
		*in = Instance{ID: in.ID, Formation: in.Formation, Service: in.Service, Release: in.Release, Resources: svc.Resources, DistinctHosts: svc.DistinctHosts, SpreadLabel: svc.SpreadLabel}
	}
	others := make([]Instance, 0, len(c.desired))
	for _, in := range c.desired {
		if in.Formation != svc.Formation || in.Service != svc.Service {
			others = append(others, in)
		}
	}

	b.Run("no-change", func(b *testing.B) { benchPlan(b, c.desired, c.hosts, settled) })

	b.Run("scale-one-service-+10", func(b *testing.B) {
		desired := append(clone(others), scale(svc.Formation, svc.Service, "r1", 20, svc.Resources, like)...)
		benchPlan(b, desired, c.hosts, settled)
	})

	b.Run("new-release-of-one-service", func(b *testing.B) {
		desired := append(clone(others), scale(svc.Formation, svc.Service, "r2", 10, svc.Resources, like)...)
		benchPlan(b, desired, c.hosts, settled)
	})

	b.Run("one-host-dead", func(b *testing.B) {
		hosts := clone(c.hosts)
		hosts[0].CriticalSince = now.Add(-time.Hour)
		benchPlan(b, c.desired, hosts, settled)
	})
}

func clone[E any](s []E) []E { return append([]E(nil), s...) }

// BenchmarkNaive is the baseline the optimisations are measured against: the same plan with
// every instance scanning every host (naivePlaceGroup, from the property tests).
func BenchmarkNaive(b *testing.B) {
	c := makeCluster(10_000, 1_000, mixedScales)
	b.Run("10k-instances-1k-hosts", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := newPlanner(c.desired, c.hosts, now, Options{DeadAfter: time.Minute})
			p.keep(nil)
			p.placeAll(p.naivePlaceGroup)
			p.result()
		}
	})
}
