package sync

import (
	"context"
	"errors"
	"slices"
	"sort"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// advanceAll moves every service of every formation a step towards its target (see
// advance) and writes the formations that changed with check-and-set; a conflict is left
// for the next pass. Services roll out in dependency order: a service whose dependency is
// still rolling out waits.
func (s *Syncer) advanceAll(ctx context.Context) error {
	formations, err := s.store.Formations(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	var errs []error
	for _, f := range formations {
		d, index, err := s.store.Desired(ctx, f)
		if err != nil || d == nil {
			errs = append(errs, err)
			continue
		}
		var events []state.Event
		ready := map[string]bool{} // services settled on their target with every instance passing
		for _, name := range dependencyOrder(d) {
			ds := d.Services[name]
			blocked := false
			for _, dep := range ds.DependsOn {
				if _, ok := d.Services[dep]; ok && !ready[dep] {
					blocked = true
				}
			}
			passing, err := s.health(ctx, f, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			next, what := advance(f, name, ds, passing, now, blocked)
			ready[name] = next.Rollout == nil && len(next.Deployments) == 1 && next.Deployments[0].Release == next.Target() &&
				passing.healthyFor(f, name, next.Target(), next.Deployments[0].Scale, 0, now) >= next.Deployments[0].Scale
			if what == "" {
				continue
			}
			s.log.Info(what, "formation", f, "service", name)
			d.Services[name] = next
			events = append(events, state.Event{Time: now.UTC(), Service: name, Release: next.Target(), What: what})
		}
		if len(events) == 0 {
			continue
		}
		d.Updated = now.UTC()
		err = s.store.PutDesired(ctx, d, index)
		if errors.Is(err, state.ErrConflict) {
			continue // someone (a rollback, a scale) wrote first: next pass
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, s.store.AddEvents(ctx, f, events...))
	}
	return errors.Join(errs...)
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

// health reads the Consul checks of a service's instances and returns, for each passing
// instance, since when it has been passing as far as this leader saw: the clock starts at
// the first pass that sees it passing and resets when it stops. A new leader starts
// counting anew, which only delays a roll-out by one minimum healthy time.
func (s *Syncer) health(ctx context.Context, formation, service string) (Passing, error) {
	name := formation + "-" + service
	entries, _, err := s.store.Client().Health().Service(name, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.passing[name]
	out := Passing{}
	for _, e := range entries {
		if e.Checks.AggregatedStatus() != api.HealthPassing {
			continue
		}
		id := e.Service.Meta["instance"] // the registration's ID also names its host
		since, ok := before[id]
		if !ok {
			since = now
		}
		out[id] = since
	}
	s.passing[name] = out // instances gone or failing are forgotten
	return out, nil
}
