package placement

import (
	"testing"
	"time"
)

func pinned(host string) func(*Instance) {
	return func(in *Instance) { in.Host = host }
}

// An instance pinned to a host (its volumes) runs there or nowhere.
func TestPinnedToItsVolumesHost(t *testing.T) {
	small := Resources{CPU: 100, Memory: gib / 4}
	hosts := []Host{host("a", 1000, 4*gib), host("b", 1000, 4*gib), host("c", 1000, 4*gib)}
	runCases(t, []planCase{
		{
			name:    "a new pinned instance goes to its host, however loaded",
			desired: join(scale("f", "db", "r1", 1, small, pinned("c")), scale("f", "web", "r1", 3, small)),
			hosts:   hosts,
			current: map[string][]string{"c": {"f/web/r1/0", "f/web/r1/1"}},
			assign:  map[string][]string{"a": {"f/web/r1/2"}, "c": {"f/db/r1/0", "f/web/r1/0", "f/web/r1/1"}},
		},
		{
			name:    "a new release of a pinned slot replaces the old one on the same host",
			desired: scale("f", "db", "r2", 1, small, pinned("b")),
			hosts:   hosts,
			current: map[string][]string{"b": {"f/db/r1/0"}},
			assign:  map[string][]string{"b": {"f/db/r2/0"}},
			start:   []string{"f/db/r2/0@b"},
			stop:    []string{"f/db/r1/0@b"},
		},
		{
			name:     "running elsewhere than its pin, it moves to its pin",
			desired:  scale("f", "db", "r1", 1, small, pinned("b")),
			hosts:    hosts,
			current:  map[string][]string{"a": {"f/db/r1/0"}},
			assign:   map[string][]string{"b": {"f/db/r1/0"}},
			unplaced: map[string]string{},
		},
		{
			name:     "its host dead: stopped there, not started elsewhere, and the reason names the host",
			desired:  scale("f", "db", "r1", 1, small, pinned("b")),
			hosts:    []Host{host("a", 1000, 4*gib), criticalFor(host("b", 1000, 4*gib), time.Hour)},
			current:  map[string][]string{"b": {"f/db/r1/0"}},
			assign:   map[string][]string{},
			stop:     []string{"f/db/r1/0@b"},
			unplaced: map[string]string{"f/db/r1/0": "its volumes are on host b, which is dead"},
		},
		{
			name:     "its host critical, not yet dead: it keeps running there",
			desired:  scale("f", "db", "r1", 1, small, pinned("b")),
			hosts:    []Host{host("a", 1000, 4*gib), criticalFor(host("b", 1000, 4*gib), time.Second)},
			current:  map[string][]string{"b": {"f/db/r1/0"}},
			assign:   map[string][]string{"b": {"f/db/r1/0"}},
			unplaced: map[string]string{},
		},
		{
			name:     "its host critical: a new instance of the slot waits",
			desired:  scale("f", "db", "r2", 1, small, pinned("b")),
			hosts:    []Host{host("a", 1000, 4*gib), criticalFor(host("b", 1000, 4*gib), time.Second)},
			unplaced: map[string]string{"f/db/r2/0": "its volumes are on host b, which is critical"},
		},
		{
			name:     "its host gone from the catalog",
			desired:  scale("f", "db", "r1", 1, small, pinned("gone")),
			hosts:    hosts,
			unplaced: map[string]string{"f/db/r1/0": "its volumes are on host gone, which is gone (dead, or not among the hosts any more)"},
		},
		{
			name:     "its host full",
			desired:  join(scale("f", "big", "r1", 1, Resources{CPU: 1000}), scale("f", "db", "r1", 1, small, pinned("a"))),
			hosts:    hosts,
			current:  map[string][]string{"a": {"f/big/r1/0"}},
			unplaced: map[string]string{"f/db/r1/0": "its volumes are on host a, which has its cpu exhausted"},
		},
		{
			name:     "its host no longer matches the service's constraints",
			desired:  scale("f", "db", "r1", 1, small, pinned("a"), constrained(Constraint{Key: "disk", Op: OpEqual, Value: "ssd"})),
			hosts:    []Host{host("a", 1000, 4*gib), host("b", 1000, 4*gib, "disk=ssd")},
			current:  map[string][]string{"a": {"f/db/r1/0"}},
			unplaced: map[string]string{"f/db/r1/0": "its volumes are on host a, which is filtered by constraint disk=ssd"},
		},
		{
			name:    "two slots pinned to two hosts, and an unpinned one spread",
			desired: join(scale("f", "db", "r1", 2, small, func(in *Instance) { in.Host = map[byte]string{'0': "c", '1': "a"}[in.ID[len(in.ID)-1]] }), scale("f", "db", "r1", 0, small)),
			hosts:   hosts,
			assign:  map[string][]string{"a": {"f/db/r1/1"}, "c": {"f/db/r1/0"}},
		},
	})
}

// Planning again over a result with pins changes nothing.
func TestPinnedIsStable(t *testing.T) {
	desired := join(scale("f", "db", "r1", 3, Resources{CPU: 100}, pinned("b")), scale("f", "web", "r1", 4, Resources{CPU: 100}))
	hosts := []Host{host("a", 1000, 4*gib), host("b", 1000, 4*gib)}
	r := Plan(desired, hosts, nil, now, Options{DeadAfter: time.Minute})
	current := ids(r)
	if len(current["b"]) < 3 {
		t.Fatalf("pinned instances not on b: %v", current)
	}
	again := Plan(desired, hosts, current, now, Options{DeadAfter: time.Minute})
	if len(again.Changed) != 0 || len(again.Start) != 0 || len(again.Stop) != 0 {
		t.Fatalf("second plan changed %v", again.Changed)
	}
}
