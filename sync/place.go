package sync

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// place runs the scheduler over every formation's desired instances and the hosts in the
// catalog, and writes the assignments of the hosts whose assignment changed, and only
// those, with check-and-set. On a conflict the next pass re-reads and re-plans.
func (s *Syncer) place(ctx context.Context) error {
	now := s.cfg.Now()
	hosts, err := s.store.Hosts(ctx)
	if err != nil {
		return err
	}
	phosts := s.liveness(hosts)

	formations, err := s.store.Formations(ctx)
	if err != nil {
		return err
	}
	var desired []placement.Instance
	instances := map[string]state.Instance{}
	for _, f := range formations {
		d, _, err := s.store.Desired(ctx, f)
		if err != nil {
			return err
		}
		if d == nil {
			continue
		}
		for _, inst := range d.Instances() {
			rel, err := s.release(ctx, f, inst.Release)
			if err != nil {
				return err
			}
			instances[inst.ID] = inst
			desired = append(desired, placement.Instance{
				ID: inst.ID, Formation: f, Service: inst.Service, Release: inst.Release,
				Resources:   placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory},
				Constraints: constraints(d.Services[inst.Service].Constraints),
			})
		}
	}

	current, indexes, err := s.store.Assignments(ctx)
	if err != nil {
		return err
	}
	currentIDs := map[string][]string{}
	for h, a := range current {
		for _, inst := range a.Instances {
			currentIDs[h] = append(currentIDs[h], inst.ID)
		}
	}

	res := placement.Plan(desired, phosts, currentIDs, now, s.cfg.Placement)
	if err := s.reportUnplaced(ctx, res.Unplaced); err != nil {
		return err
	}
	if len(res.Changed) == 0 {
		return nil
	}
	writes := make([]*state.Assignment, 0, len(res.Changed))
	for _, h := range res.Changed {
		a := &state.Assignment{Host: h, Updated: now.UTC(), Instances: []state.Instance{}}
		for _, pi := range res.Assignments[h] {
			a.Instances = append(a.Instances, instances[pi.ID])
		}
		writes = append(writes, a)
	}
	if err := s.store.WriteAssignments(ctx, writes, indexes); err != nil {
		return err
	}
	s.log.Info("assignments written", "hosts", len(writes), "started", len(res.Start), "stopped", len(res.Stop), "unplaced", len(res.Unplaced))
	return nil
}

// liveness turns the catalog's hosts into the scheduler's, remembering since when each
// failing host has been failing (a leader that just took over starts counting anew, which
// errs on the side of not moving instances).
func (s *Syncer) liveness(hosts []state.Host) []placement.Host {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	out := make([]placement.Host, 0, len(hosts))
	for _, h := range hosts {
		seen[h.ID] = true
		if h.Passing {
			delete(s.critical, h.ID)
		} else if _, ok := s.critical[h.ID]; !ok {
			s.critical[h.ID] = now
			s.log.Warn("host failing its liveness check", "host", h.ID)
		}
		out = append(out, placement.Host{ID: h.ID, Labels: h.Labels, CriticalSince: s.critical[h.ID],
			Capacity: placement.Resources{CPU: h.Capacity.CPU, Memory: h.Capacity.Memory}})
	}
	for h := range s.critical {
		if !seen[h] {
			delete(s.critical, h)
		}
	}
	return out
}

// reportUnplaced logs and records the instances that cannot be placed, when that set or
// its reasons change.
func (s *Syncer) reportUnplaced(ctx context.Context, unplaced []placement.Unplaced) error {
	var lines []string
	report := &state.PlacementReport{Unplaced: []state.UnplacedInstance{}, Updated: s.cfg.Now().UTC()}
	for _, u := range unplaced {
		lines = append(lines, u.Instance.ID+": "+u.Reason)
		report.Unplaced = append(report.Unplaced, state.UnplacedInstance{
			Instance: u.Instance.ID, Formation: u.Instance.Formation, Service: u.Instance.Service, Reason: u.Reason})
	}
	sort.Strings(lines)
	text := strings.Join(lines, "\n")
	s.mu.Lock()
	same := s.reported && text == s.unplaced
	s.mu.Unlock()
	if same {
		return nil
	}
	if text != "" {
		s.log.Warn("instances that cannot be placed", "count", len(lines), "why", text)
	} else if s.reported {
		s.log.Info("every instance is placed")
	}
	if err := s.store.PutPlacementReport(ctx, report); err != nil {
		return err
	}
	s.mu.Lock()
	s.unplaced, s.reported = text, true
	s.mu.Unlock()
	return nil
}

// release returns a release, cached: releases never change.
func (s *Syncer) release(ctx context.Context, formation, id string) (*state.Release, error) {
	s.mu.Lock()
	r := s.releases[id]
	s.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := s.store.Release(ctx, formation, id)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("release %s of %s is missing", id, formation)
	}
	s.mu.Lock()
	s.releases[id] = r
	s.mu.Unlock()
	return r, nil
}

func constraints(cs []state.Constraint) []placement.Constraint {
	out := make([]placement.Constraint, 0, len(cs))
	for _, c := range cs {
		out = append(out, placement.Constraint{Key: c.Key, Op: placement.Op(c.Op), Value: c.Value})
	}
	return out
}
