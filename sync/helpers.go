package sync

import (
	"encoding/json"
	"slices"
	"sort"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// observedOf is a repository's observed record, empty when it has none.
func observedOf(kv *state.Snapshot, repo string) *state.Observed {
	if o := kv.Observed[repo]; o != nil {
		return o
	}
	return &state.Observed{Repo: repo, Targets: map[string]state.ObservedTarget{}}
}

// withTarget is a copy of obs with one target changed.
func withTarget(obs *state.Observed, t Target, update func(*state.ObservedTarget)) *state.Observed {
	c := &state.Observed{Repo: obs.Repo, Targets: make(map[string]state.ObservedTarget, len(obs.Targets)+1)}
	for k, v := range obs.Targets {
		c.Targets[k] = v
	}
	ot := c.Targets[t.Key()]
	ot.Ref, ot.File = t.Ref, t.File
	update(&ot)
	c.Targets[t.Key()] = ot
	return c
}

// configChanged says whether a formation's config vars changed since its releases were
// derived.
func configChanged(kv *state.Snapshot, formation string) bool {
	d := kv.Desired[formation]
	if d == nil || len(d.Services) == 0 {
		return false
	}
	return configIndex(kv, formation, previewBase(kv, formation)) != d.ConfigIndex
}

// serviceNames are the services of every formation with a desired state.
func serviceNames(kv *state.Snapshot) map[string][]string {
	out := map[string][]string{}
	for f, d := range kv.Desired {
		for s := range d.Services {
			out[f] = append(out[f], s)
		}
	}
	return out
}

// activePreviews counts the preview formations alive, over every repository.
func activePreviews(kv *state.Snapshot) int {
	n := 0
	for _, o := range kv.Observed {
		for _, ot := range o.Targets {
			if ot.Preview && !ot.TornDown && ot.Formation != "" {
				n++
			}
		}
	}
	return n
}

// copyDesired is a deep copy: the snapshot's documents are never changed.
func copyDesired(d *state.Desired) *state.Desired {
	var c state.Desired
	b, _ := json.Marshal(d)
	_ = json.Unmarshal(b, &c)
	if c.Services == nil {
		c.Services = map[string]state.DesiredService{}
	}
	return &c
}

// dependencyOrder lists a desired formation's services with each after its dependencies.
func dependencyOrder(d *state.Desired) []string {
	names := make([]string, 0, len(d.Services))
	for n := range d.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		deps := slices.Clone(d.Services[n].DependsOn)
		sort.Strings(deps)
		for _, dep := range deps {
			if _, ok := d.Services[dep]; ok {
				visit(dep)
			}
		}
		order = append(order, n)
	}
	for _, n := range names {
		visit(n)
	}
	return order
}
