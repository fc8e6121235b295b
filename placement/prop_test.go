package placement

import (
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// The properties below hold for any cluster rapid can make up: a few hosts of mixed sizes
// (some of unknown capacity), zones, liveness; a few services with releases, constraints,
// distinct hosts and spread labels; a current assignment that may hold anything, including
// unknown hosts, undesired and duplicated instances. Capacity is tight enough that some
// instances stay unplaced.

type cluster struct {
	desired []Instance
	hosts   []Host
	current map[string][]string
	opts    Options
}

const deadAfter = time.Minute

var (
	zones       = []string{"a", "b", "c"}
	constraints = []Constraint{
		{"zone", OpEqual, "a"}, {"zone", OpNotEqual, "b"}, {"zone", OpRegexp, "^[ab]$"},
		{"disk", OpEqual, "ssd"}, {"disk", OpNotEqual, "ssd"}, {"gpu", OpRegexp, "."},
	}
)

func genHost(t *rapid.T, id string) Host {
	h := Host{
		ID: id,
		Capacity: Resources{
			CPU:    rapid.SampledFrom([]int64{0, 500, 1000, 2000}).Draw(t, "cpu"),
			Memory: rapid.SampledFrom([]int64{0, gib, 2 * gib, 4 * gib}).Draw(t, "memory"),
		},
		Labels: map[string]string{},
	}
	if z := rapid.IntRange(0, len(zones)).Draw(t, "zone"); z < len(zones) {
		h.Labels["zone"] = zones[z]
	}
	if rapid.Bool().Draw(t, "ssd") {
		h.Labels["disk"] = "ssd"
	}
	if rapid.IntRange(0, 3).Draw(t, "gpu") == 0 {
		h.Labels["gpu"] = "yes"
	}
	switch rapid.IntRange(0, 5).Draw(t, "health") {
	case 0:
		h.CriticalSince = now.Add(-deadAfter / 2) // critical
	case 1:
		h.CriticalSince = now.Add(-2 * deadAfter) // dead
	}
	return h
}

func genCluster(t *rapid.T) cluster {
	c := cluster{
		current: make(map[string][]string),
		opts:    Options{Binpack: rapid.Bool().Draw(t, "binpack"), DeadAfter: deadAfter, Seed: rapid.Int64Range(0, 3).Draw(t, "seed")},
	}
	for i := range rapid.IntRange(0, 7).Draw(t, "hosts") {
		c.hosts = append(c.hosts, genHost(t, fmt.Sprintf("h%d", i)))
	}
	for s := range rapid.IntRange(1, 5).Draw(t, "services") {
		f := rapid.SampledFrom([]string{"f1", "f2"}).Draw(t, "formation")
		name := fmt.Sprintf("s%d", s)
		spread := rapid.SampledFrom([]string{"", "", "zone"}).Draw(t, "spread")
		for r := range rapid.IntRange(1, 2).Draw(t, "releases") {
			res := Resources{
				CPU:    rapid.SampledFrom([]int64{0, 100, 300, 700}).Draw(t, "instance cpu"),
				Memory: rapid.SampledFrom([]int64{0, gib / 4, gib}).Draw(t, "instance memory"),
			}
			var cs []Constraint
			for range rapid.IntRange(0, 2).Draw(t, "constraints") {
				cs = append(cs, rapid.SampledFrom(constraints).Draw(t, "constraint"))
			}
			d := rapid.IntRange(0, 3).Draw(t, "distinct") == 0
			c.desired = append(c.desired, scale(f, name, fmt.Sprintf("r%d", r), rapid.IntRange(0, 6).Draw(t, "scale"), res, func(in *Instance) {
				in.Constraints, in.DistinctHosts, in.SpreadLabel = cs, d, spread
			})...)
		}
	}
	// Anything may run anywhere now, including on hosts that are gone, twice, or not at all.
	hostIDs := []string{"gone"}
	for _, h := range c.hosts {
		hostIDs = append(hostIDs, h.ID)
	}
	ids := []string{"old/1", "old/2"}
	for _, in := range c.desired {
		ids = append(ids, in.ID)
	}
	for range rapid.IntRange(0, len(ids)+2).Draw(t, "running") {
		h := rapid.SampledFrom(hostIDs).Draw(t, "on")
		c.current[h] = append(c.current[h], rapid.SampledFrom(ids).Draw(t, "running id"))
	}
	return c
}

func (c cluster) plan() Result { return Plan(c.desired, c.hosts, c.current, now, c.opts) }

// asCurrent turns a Result into the current assignment of the next plan.
func asCurrent(r Result) map[string][]string { return ids(r) }

func TestPropertyNeverMoreThanDesired(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		want := make(map[[3]string]int)
		for _, in := range c.desired {
			want[[3]string{in.Formation, in.Service, in.Release}]++
		}
		got := make(map[[3]string]int)
		seen := make(map[string]string)
		for h, list := range r.Assignments {
			for _, in := range list {
				if other, dup := seen[in.ID]; dup {
					t.Fatalf("%s on both %s and %s", in.ID, other, h)
				}
				seen[in.ID] = h
				got[[3]string{in.Formation, in.Service, in.Release}]++
			}
		}
		for k, n := range got {
			if n > want[k] {
				t.Fatalf("%v: %d assigned, %d desired", k, n, want[k])
			}
		}
	})
}

func TestPropertyNeverOverCapacity(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		for _, h := range c.hosts {
			var used Resources
			for _, in := range r.Assignments[h.ID] {
				used.CPU += in.Resources.CPU
				used.Memory += in.Resources.Memory
			}
			if h.Capacity.CPU > 0 && used.CPU > h.Capacity.CPU || h.Capacity.Memory > 0 && used.Memory > h.Capacity.Memory {
				t.Fatalf("host %s: %+v used of %+v", h.ID, used, h.Capacity)
			}
		}
	})
}

func TestPropertyStopsAreRunning(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		for _, m := range r.Stop {
			if !slices.Contains(c.current[m.Host], m.Instance.ID) {
				t.Fatalf("stop %s on %s, which does not run it", m.Instance.ID, m.Host)
			}
		}
	})
}

// TestPropertyEverythingPlaceableIsPlaced checks that the plan leaves no usable room behind.
//
// An unplaced instance is placeable if some host could take it on top of the final
// assignment, as that assignment stands: the host is known and healthy (neither critical
// nor dead), its labels satisfy the instance's constraints, it has room for the instance's
// resources, and adding it keeps distinct hosts (no instance of the same formation and
// service on that host if the instance asks for distinct hosts; none that asks, otherwise).
// No unplaced instance may be placeable.
//
// This is maximality, not optimality. With distinct hosts, or bin packing at all, a
// cleverer assignment may place more: running the first instance elsewhere may free the
// only host a distinct sibling could use. Finding the best assignment is NP-hard, and
// getting there would move running instances, which stability forbids; what a greedy
// planner can promise, and this one does, is that it never leaves an instance out while a
// host has room for it.
func TestPropertyEverythingPlaceableIsPlaced(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		for _, u := range r.Unplaced {
			if u.Reason == "duplicate instance id" || len(u.Reason) > 7 && u.Reason[:7] == "invalid" {
				continue
			}
			for _, h := range c.hosts {
				if canTake(h, r.Assignments[h.ID], u.Instance) {
					t.Fatalf("%s unplaced (%s), but host %s can take it", u.Instance.ID, u.Reason, h.ID)
				}
			}
		}
	})
}

// canTake is the definition above, written independently of the planner.
func canTake(h Host, running []Instance, in Instance) bool {
	if !h.CriticalSince.IsZero() {
		return false
	}
	for _, c := range in.Constraints {
		v, ok := h.Labels[c.Key]
		switch c.Op {
		case OpEqual:
			if !ok || v != c.Value {
				return false
			}
		case OpNotEqual:
			if ok && v == c.Value {
				return false
			}
		case OpRegexp:
			if !ok || !regexp.MustCompile(c.Value).MatchString(v) {
				return false
			}
		}
	}
	used := in.Resources
	for _, o := range running {
		used.CPU += o.Resources.CPU
		used.Memory += o.Resources.Memory
		if o.Formation == in.Formation && o.Service == in.Service && (o.DistinctHosts || in.DistinctHosts) {
			return false
		}
	}
	return (h.Capacity.CPU == 0 || used.CPU <= h.Capacity.CPU) && (h.Capacity.Memory == 0 || used.Memory <= h.Capacity.Memory)
}

func TestPropertySecondPlanChangesNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		c.current = asCurrent(r)
		again := c.plan()
		if len(again.Start) > 0 || len(again.Stop) > 0 || len(again.Changed) > 0 {
			t.Fatalf("second plan: start %v, stop %v, changed %v", moves(again.Start), moves(again.Stop), again.Changed)
		}
		if !reflect.DeepEqual(again.Assignments, r.Assignments) || !reflect.DeepEqual(again.Unplaced, r.Unplaced) {
			t.Fatalf("second plan differs:\n%v %q\n%v %q", ids(r), reasons(r), ids(again), reasons(again))
		}
	})
}

func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		if again := c.plan(); !reflect.DeepEqual(r, again) {
			t.Fatalf("same input, different results")
		}
		shuffled := cluster{
			desired: rapid.Permutation(c.desired).Draw(t, "desired order"),
			hosts:   rapid.Permutation(c.hosts).Draw(t, "host order"),
			current: make(map[string][]string),
			opts:    c.opts,
		}
		for h, list := range c.current {
			shuffled.current[h] = rapid.Permutation(list).Draw(t, "current order")
		}
		if dup := hasDuplicateIDs(c.desired); !dup && !reflect.DeepEqual(r, shuffled.plan()) {
			t.Fatalf("input order changed the result")
		}
	})
}

func hasDuplicateIDs(desired []Instance) bool {
	seen := make(map[string]bool)
	for _, in := range desired {
		if seen[in.ID] {
			return true
		}
		seen[in.ID] = true
	}
	return false
}

func TestPropertyNothingOnDeadHosts(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		for _, h := range c.hosts {
			if isDead(h) && len(r.Assignments[h.ID]) > 0 {
				t.Fatalf("dead host %s assigned %v", h.ID, ids(r)[h.ID])
			}
		}
		for _, m := range r.Start {
			if h := hostByID(c.hosts, m.Host); !h.CriticalSince.IsZero() {
				t.Fatalf("started %s on critical host %s", m.Instance.ID, m.Host)
			}
		}
	})
}

func isDead(h Host) bool { return !h.CriticalSince.IsZero() && now.Sub(h.CriticalSince) > deadAfter }

func hostByID(hosts []Host, id string) Host {
	for _, h := range hosts {
		if h.ID == id {
			return h
		}
	}
	return Host{}
}

// TestPropertyConsistent checks that the parts of a Result agree with each other and with
// the input: the assignment is current minus Stop plus Start, Changed is exactly the hosts
// that gained or lost an instance, every desired instance is either assigned or unplaced,
// and every assignment satisfies constraints and distinct hosts.
func TestPropertyConsistent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		r := c.plan()
		want := make(map[string]map[string]bool)
		for h, list := range c.current {
			want[h] = make(map[string]bool)
			for _, id := range list {
				want[h][id] = true
			}
		}
		changed := make(map[string]bool)
		for _, m := range r.Stop {
			delete(want[m.Host], m.Instance.ID)
			changed[m.Host] = true
		}
		for _, m := range r.Start {
			if want[m.Host] == nil {
				want[m.Host] = make(map[string]bool)
			}
			if want[m.Host][m.Instance.ID] {
				t.Fatalf("start %s on %s, which already runs it", m.Instance.ID, m.Host)
			}
			want[m.Host][m.Instance.ID] = true
			changed[m.Host] = true
		}
		got := ids(r)
		for h, set := range want {
			if !slices.Equal(slices.Sorted(maps.Keys(set)), got[h]) {
				t.Fatalf("host %s: assigned %v, current-stop+start %v", h, got[h], slices.Sorted(maps.Keys(set)))
			}
		}
		if !slices.Equal(r.Changed, slices.Sorted(maps.Keys(changed))) {
			t.Fatalf("changed %v, hosts with moves %v", r.Changed, slices.Sorted(maps.Keys(changed)))
		}

		placed := 0
		for _, h := range c.hosts {
			for j, in := range r.Assignments[h.ID] {
				placed++
				others := slices.Delete(slices.Clone(r.Assignments[h.ID]), j, j+1)
				free := h
				free.CriticalSince = time.Time{} // kept instances may be on a critical host
				free.Capacity = Resources{}      // capacity has its own property
				if !canTake(free, others, in) {
					t.Fatalf("%s on %s breaks a constraint or distinct hosts", in.ID, h.ID)
				}
			}
		}
		if placed+len(r.Unplaced) != len(c.desired) {
			t.Fatalf("%d placed + %d unplaced != %d desired", placed, len(r.Unplaced), len(c.desired))
		}
	})
}

// TestPropertyStable checks stability: after a change (instances removed or added, hosts
// added or dead), every instance still desired stays on its host unless that host died.
func TestPropertyStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		before := c.plan()
		c.current = asCurrent(before)

		var kept []Instance
		for _, in := range c.desired {
			if rapid.IntRange(0, 4).Draw(t, "drop") > 0 {
				kept = append(kept, in)
			}
		}
		c.desired = append(kept, scale("f3", "new", "r1", rapid.IntRange(0, 5).Draw(t, "new scale"), Resources{CPU: 100})...)
		for i := range rapid.IntRange(0, 2).Draw(t, "new hosts") {
			c.hosts = append(c.hosts, genHost(t, fmt.Sprintf("new%d", i)))
		}
		hosts := slices.Clone(c.hosts)
		for i := range hosts {
			if rapid.IntRange(0, 5).Draw(t, "dies") == 0 {
				hosts[i].CriticalSince = now.Add(-time.Hour)
			}
		}
		c.hosts = hosts
		after := c.plan()

		where := make(map[string]string)
		for h, list := range after.Assignments {
			for _, in := range list {
				where[in.ID] = h
			}
		}
		for h, list := range before.Assignments {
			if isDead(hostByID(c.hosts, h)) {
				continue
			}
			for _, in := range list {
				if slices.ContainsFunc(c.desired, func(d Instance) bool { return d.ID == in.ID }) && where[in.ID] != h {
					t.Fatalf("%s moved from %s to %q", in.ID, h, where[in.ID])
				}
			}
		}
	})
}

// TestPropertySameAsNaive checks placeGroup's shortcuts (one scan per group or a walk of the
// ranking, the k best per label value, heaps) against the plain greedy they stand for: every instance scans every
// host and takes the best by the ranking of score.go.
func TestPropertySameAsNaive(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genCluster(t)
		p := newPlanner(c.desired, c.hosts, now, c.opts)
		p.keep(c.current)
		p.placeAll(p.naivePlaceGroup)
		naive := p.result()
		// Small clusters never walk the ranking at the default ratio: force walks, some
		// of which give up half-way and fall back to a scan.
		for _, ratio := range []int{16, 3, 1} {
			p := newPlanner(c.desired, c.hosts, now, c.opts)
			p.scanRatio = ratio
			p.keep(c.current)
			p.placeAll(p.placeGroup)
			if fast := p.result(); !reflect.DeepEqual(fast, naive) {
				t.Fatalf("scan ratio %d: placeGroup and the naive placer differ:\n%v\n%v", ratio, ids(fast), ids(naive))
			}
		}
	})
}

func (p *planner) naivePlaceGroup(g *group) []int32 {
	for n, i := range g.members {
		// Instances of the service per spread label value, counted afresh.
		perValue := make(map[string]int32)
		valueOf := func(h int32) string {
			v, ok := p.hosts[h].Labels[g.key.spread]
			if !ok {
				return "\x00none"
			}
			return v
		}
		if g.key.spread != "" {
			for h, on := range g.svc.on {
				perValue[valueOf(h)] += on.count
			}
		}
		best := int32(-1)
		for h := range int32(len(p.hosts)) {
			if p.health[h] != healthy || !g.feas.ok[h] || !p.allowed(g, h) || !p.fits(h, g.req) {
				continue
			}
			if best < 0 || perValue[valueOf(h)] < perValue[valueOf(best)] ||
				perValue[valueOf(h)] == perValue[valueOf(best)] && p.better(h, best) {
				best = h
			}
		}
		if best < 0 {
			return g.members[n:]
		}
		p.place(i, best)
		p.svcOn[best]++
		if g.key.distinct {
			p.svcDistinct[best]++
		}
	}
	return nil
}
