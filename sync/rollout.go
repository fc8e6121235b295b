package sync

import (
	"fmt"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// Passing is what the leader knows of instances' health checks: for each instance that
// passes now, since when it has been passing without a break.
type Passing map[string]time.Time

// healthyFor counts the first n instances of a release that have passed their check for at
// least d.
func (p Passing) healthyFor(formation, service, release string, n int, d time.Duration, now time.Time) int {
	count := 0
	for i := 0; i < n; i++ {
		if since, ok := p[state.InstanceID(formation, service, release, i)]; ok && now.Sub(since) >= d {
			count++
		}
	}
	return count
}

// advance moves one service a step towards its target release and scale, and says what it
// did ("" when nothing changed). It is pure: the caller reads health from Consul and
// writes the result with check-and-set.
//
// A service settled on its target only follows scale changes. When the target differs, a
// roll-out starts: the new release's instances start, at most Strategy.MaxParallel
// unhealthy ones at a time, and an old instance stops only when a new one has passed its
// check for Strategy.MinHealthy, so the healthy count never drops below the scale. A
// roll-out not done within Strategy.Deadline is reverted: the old release returns to full
// scale and the new one is marked Failed, so it is not tried again. A service that ran
// nothing starts its target at full scale at once: there is nothing to protect. blocked
// holds back a first deploy or the start of a roll-out: a dependency is not yet settled
// and healthy.
func advance(formation, service string, ds state.DesiredService, passing Passing, now time.Time, blocked bool) (state.DesiredService, string) {
	target, scale := ds.Target(), ds.Scale()
	if target == "" {
		return ds, ""
	}
	if ds.Rollout == nil {
		switch {
		case len(ds.Deployments) == 0 && blocked:
			return ds, ""
		case len(ds.Deployments) == 0:
			ds.Deployments = []state.Deployment{{Release: target, Scale: scale}}
			return ds, fmt.Sprintf("deployed release %s at scale %d", short(target), scale)
		case len(ds.Deployments) == 1 && ds.Deployments[0].Release == target:
			if ds.Deployments[0].Scale == scale {
				return ds, ""
			}
			ds.Deployments = []state.Deployment{{Release: target, Scale: scale}}
			return ds, fmt.Sprintf("scaled release %s to %d", short(target), scale)
		case blocked:
			return ds, ""
		}
		cause := ds.LatestCause
		if ds.Pin != nil {
			cause = "rollback"
		}
		from := settled(ds.Deployments)
		ds.Rollout = &state.Rollout{From: from, To: target, Started: now, Cause: cause}
		ds, _ = step(formation, service, ds, scale, passing, now)
		return ds, fmt.Sprintf("roll-out of release %s started (%s), replacing %s", short(target), cause, short(from))
	}

	r := ds.Rollout
	if r.To != target {
		if target == r.From {
			ds.Deployments = []state.Deployment{{Release: r.From, Scale: scale}}
			ds.Rollout = nil
			return ds, fmt.Sprintf("roll-out of release %s abandoned: back on %s", short(r.To), short(r.From))
		}
		// A newer target: roll out that one instead, from the same settled release; the
		// instances of the superseded one stop.
		old := r.To
		ds.Rollout = &state.Rollout{From: r.From, To: target, Started: now, Cause: r.Cause}
		ds, _ = step(formation, service, ds, scale, passing, now)
		return ds, fmt.Sprintf("roll-out of release %s superseded by %s", short(old), short(target))
	}
	return step(formation, service, ds, scale, passing, now)
}

// step is one step of a roll-out in progress.
func step(formation, service string, ds state.DesiredService, scale int, passing Passing, now time.Time) (state.DesiredService, string) {
	r := ds.Rollout
	running := 0
	for _, d := range ds.Deployments {
		if d.Release == r.To {
			running = d.Scale
		}
	}
	healthy := passing.healthyFor(formation, service, r.To, running, ds.Strategy.MinHealthy, now)
	switch {
	case healthy >= scale:
		ds.Deployments = []state.Deployment{{Release: r.To, Scale: scale}}
		ds.Rollout = nil
		return ds, fmt.Sprintf("roll-out of release %s done: %d healthy", short(r.To), healthy)
	case ds.Strategy.Deadline > 0 && now.Sub(r.Started) > ds.Strategy.Deadline:
		ds.Failed = r.To
		ds.Rollout = nil
		if r.From == "" {
			ds.Deployments = []state.Deployment{{Release: r.To, Scale: 0}}
		} else {
			ds.Deployments = []state.Deployment{{Release: r.From, Scale: scale}}
		}
		return ds, fmt.Sprintf("roll-out of release %s failed: %d of %d healthy after %s; reverted to %s",
			short(r.To), healthy, scale, ds.Strategy.Deadline, orNone(short(r.From)))
	}
	maxParallel := max(ds.Strategy.MaxParallel, 1)
	deps := []state.Deployment{}
	if r.From != "" {
		deps = append(deps, state.Deployment{Release: r.From, Scale: max(scale-healthy, 0)})
	}
	deps = append(deps, state.Deployment{Release: r.To, Scale: min(scale, healthy+maxParallel)})
	if ds.Exclusive {
		// Its instances hold volumes, which two processes never share: the old ones stop
		// and the new ones start in their place (hostd starts a new one once the old one
		// of its slot is gone).
		deps = exclusiveStep(r, scale)
	}
	before := fmt.Sprint(ds.Deployments)
	ds.Deployments = deps
	if fmt.Sprint(deps) == before {
		return ds, ""
	}
	return ds, fmt.Sprintf("roll-out of release %s: %d of %d healthy", short(r.To), healthy, scale)
}

// settled is the release a service runs outside a roll-out: the one with the most instances.
func settled(deps []state.Deployment) string {
	best := state.Deployment{Scale: -1}
	for _, d := range deps {
		if d.Scale > best.Scale {
			best = d
		}
	}
	return best.Release
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// withCanary runs advance on a service with a canary: the canary's instances are set
// aside, the service advances as if they were not there, and they are put back, last, at
// the canary's scale. It says what changed for the canary ("" when nothing did).
func withCanary(formation, service string, ds state.DesiredService, passing Passing, now time.Time, blocked bool) (state.DesiredService, string, string) {
	c := ds.Canary
	if c == nil || c.Release == ds.Target() {
		after, what := advance(formation, service, ds, passing, now, blocked)
		return after, what, ""
	}
	base, had := ds, 0
	base.Deployments = nil
	for _, d := range ds.Deployments {
		if d.Release == c.Release {
			had = d.Scale
			continue
		}
		base.Deployments = append(base.Deployments, d)
	}
	after, what := advance(formation, service, base, passing, now, blocked)
	after.Deployments = append(after.Deployments, state.Deployment{Release: c.Release, Scale: c.Scale})
	if had == c.Scale {
		return after, what, ""
	}
	return after, what, fmt.Sprintf("canary: release %s at scale %d beside %s", short(c.Release), c.Scale, short(after.Target()))
}

// exclusiveStep is a roll-out step of a service whose instances hold volumes: every old
// instance stops and the new release runs at full scale, slot for slot.
func exclusiveStep(r *state.Rollout, scale int) []state.Deployment {
	deps := []state.Deployment{}
	if r.From != "" {
		deps = append(deps, state.Deployment{Release: r.From, Scale: 0})
	}
	return append(deps, state.Deployment{Release: r.To, Scale: scale})
}
