package hostd

import (
	"sort"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// observed is one of our containers as the engine reports it.
type observed struct {
	ID       string
	Instance string
	Release  string
	State    string // created, running, exited, dead, paused, restarting, removing
	// HostPorts maps container ports to the host ports they are published on (running only).
	HostPorts map[int]int
	// IP is the container's address on its formation's network ("" when not on it).
	IP string
	// The last run of a container that is not running, from its inspection.
	StartedAt, FinishedAt time.Time
	ExitCode              int
	OOMKilled             bool
}

// history is what the daemon remembers of one instance between passes: its crashes and
// failed starts, which pace its restarts, and what status shows of them.
type history struct {
	Restarts int // starts after an exit
	// Failures counts crashes and failed creates or starts in a row; a run of StableAfter
	// resets it. The wait before the next start doubles with each.
	Failures  int
	LastExit  time.Time // FinishedAt of the last exit counted, so an exit counts once
	ExitCode  int
	OOMKilled bool
	Logs      []string  // the last lines before the last exit
	Error     string    // why the last create or start failed
	NextStart time.Time // no create or start before this

	// Started is when the daemon last started the container (or first saw it running):
	// its check's grace counts from then.
	Started time.Time
	// CriticalSince is when the check was first seen critical, past its grace, in the
	// current streak; HealthySince when it was first seen passing in the current run.
	// StableBefore says the run passed for StableAfter before the streak, which starts the
	// backoff over.
	CriticalSince, HealthySince time.Time
	StableBefore                bool
	// Unhealthy counts the restarts because the check stayed critical; StoppedUnhealthy
	// says the container was stopped for it, so its exit is not counted as a crash.
	Unhealthy        int
	StoppedUnhealthy bool
	// Reason is why the last restart happened: "crash" or "unhealthy".
	Reason string
}

// Restart reasons, in status.
const (
	ReasonCrash     = "crash"
	ReasonUnhealthy = "unhealthy"
)

// crashLoop is how many failures in a row make a crash loop in status.
const crashLoop = 3

// planInput is everything a converge pass decides from: plain data, so every case is a
// table test.
type planInput struct {
	Now      time.Time
	Assigned []state.Instance
	// Known holds the instances of every assignment seen (persisted included): the removal
	// of one of them is an order; any other container of ours is a stray.
	Known      map[string]bool
	Containers []observed
	History    map[string]history
	// Restart is the restart policy of each release (by release ID); a release that is not
	// known yet restarts with the defaults.
	Restart map[string]state.Restart
	// StrayAt is when each stray container (by ID) was first seen.
	StrayAt map[string]time.Time
	// Grace is how long a stray is left alone; StableAfter how long a run must last to
	// reset the restart backoff.
	Grace, StableAfter time.Duration
	// Health is the status of each instance's check on the agent (passing, warning,
	// critical), by instance ID; an instance without an entry is not known (no check, not
	// registered, or the agent does not answer) and is never judged unhealthy.
	Health map[string]string
	// CheckGrace is, for each release with a check (by release ID), its check's grace.
	CheckGrace map[string]time.Duration
	// UnhealthyAfter is how long a check must stay critical, past its grace, for the
	// instance to be restarted.
	UnhealthyAfter time.Duration
	// CanRemove is false while Consul does not answer (an instance leaves the catalog
	// before it stops, so nothing stops); Confirmed is false until Consul has given the
	// assignment since start (a stray may be an instance of an assignment we missed).
	CanRemove, Confirmed bool
}

// plan is what one converge pass does, and what it remembers for the next.
type plan struct {
	Create []state.Instance // no container yet
	Start  []observed       // created, or exited and its wait is over
	Remove []observed       // not assigned any more, a stray past its grace, a duplicate, dead
	Keep   []observed       // running as it should
	Wait   []observed       // exited, waiting out its restart backoff
	Hold   []observed       // in a state we leave alone: paused, restarting, removing
	Exited []observed       // exits seen for the first time: their logs are read
	// Unhealthy are running, but their check stayed critical too long: they are
	// deregistered and stopped, and started again after the restart backoff.
	Unhealthy []observed

	History map[string]history
	StrayAt map[string]time.Time
	// Wake is the earliest time a wait of this plan ends (zero: none), for the next pass.
	Wake time.Time
}

// decide is the converge pass's pure half: from the assignment and our containers to the
// actions, new instances before anything else; the daemon applies them.
func decide(in planInput) plan {
	p := plan{History: map[string]history{}, StrayAt: map[string]time.Time{}}
	wake := func(t time.Time) { p.Wake = earliest(p.Wake, t) }
	remove := func(c observed) {
		if in.CanRemove {
			p.Remove = append(p.Remove, c)
		}
	}

	// One container per instance: the running one, else the first. Others are duplicates.
	byInstance := map[string]observed{}
	for _, c := range in.Containers {
		if have, dup := byInstance[c.Instance]; dup {
			if c.State == "running" && have.State != "running" {
				byInstance[c.Instance] = c
				c = have
			}
			remove(c)
			continue
		}
		byInstance[c.Instance] = c
	}

	assigned := map[string]bool{}
	for _, inst := range in.Assigned {
		assigned[inst.ID] = true
		h := in.History[inst.ID]
		pol := in.Restart[inst.Release]
		c, ok := byInstance[inst.ID]
		switch {
		case !ok && in.Now.Before(h.NextStart):
			wake(h.NextStart)
		case !ok:
			p.Create = append(p.Create, inst)
		case c.State == "running":
			grace, checked := in.CheckGrace[inst.Release]
			status, known := in.Health[inst.ID]
			var stop bool
			var at time.Time
			h, stop, at = judgeHealth(h, checked && known, status, grace, pol, in)
			wake(at)
			if stop {
				p.Unhealthy = append(p.Unhealthy, c)
			} else {
				p.Keep = append(p.Keep, c)
			}
		case c.State == "exited":
			switch {
			case !c.FinishedAt.After(h.LastExit):
			case h.StoppedUnhealthy:
				// We stopped it: not a crash, its backoff is already set.
				h.LastExit, h.StoppedUnhealthy = c.FinishedAt, false
			default:
				h = exited(h, c, pol, in.StableAfter)
				p.Exited = append(p.Exited, c)
			}
			if in.Now.Before(h.NextStart) {
				p.Wait = append(p.Wait, c)
				wake(h.NextStart)
			} else {
				p.Start = append(p.Start, c)
			}
		case c.State == "created":
			// Never started (a daemon stopped between create and start), or its start failed.
			if in.Now.Before(h.NextStart) {
				p.Wait = append(p.Wait, c)
				wake(h.NextStart)
			} else {
				p.Start = append(p.Start, c)
			}
		case c.State == "dead":
			remove(c) // cannot be started again: removed, then created anew
		default:
			p.Hold = append(p.Hold, c)
		}
		p.History[inst.ID] = h
	}

	for id, c := range byInstance {
		if assigned[id] {
			continue
		}
		if in.Known[id] {
			remove(c)
			continue
		}
		since, ok := in.StrayAt[c.ID]
		if !ok {
			since = in.Now
		}
		p.StrayAt[c.ID] = since
		if in.Now.Sub(since) >= in.Grace && in.Confirmed {
			remove(c)
		} else if in.Confirmed {
			wake(since.Add(in.Grace))
		}
	}
	sort.Slice(p.Remove, func(i, j int) bool { return p.Remove[i].Instance < p.Remove[j].Instance })
	return p
}

// judgeHealth follows the check of a running instance: critical past its grace (counted
// from the start) for UnhealthyAfter, it is to be stopped, and started again after the
// restart backoff as after a crash. It returns the history, whether to stop, and when the
// instance is to be judged again (zero: no deadline).
func judgeHealth(h history, known bool, status string, grace time.Duration, pol state.Restart, in planInput) (history, bool, time.Time) {
	if h.Started.IsZero() {
		h.Started = in.Now // adopted: its grace counts from now
	}
	if !known {
		return h, false, time.Time{} // no check, or the agent cannot tell: never judged
	}
	switch status {
	case "passing":
		h.CriticalSince = time.Time{}
		if h.HealthySince.IsZero() {
			h.HealthySince = in.Now
		}
		return h, false, time.Time{}
	case "critical":
	default:
		h.CriticalSince = time.Time{} // warning: not failing, and the critical streak ends
		return h, false, time.Time{}
	}
	if booted := h.Started.Add(grace); in.Now.Before(booted) {
		return h, false, booted
	}
	if h.CriticalSince.IsZero() {
		h.CriticalSince = in.Now
		h.StableBefore = !h.HealthySince.IsZero() && in.Now.Sub(h.HealthySince) >= in.StableAfter
		h.HealthySince = time.Time{}
	}
	if due := h.CriticalSince.Add(in.UnhealthyAfter); in.Now.Before(due) {
		return h, false, due
	}
	if h.StableBefore {
		h.Failures = 0
	}
	h.Failures++
	h.Unhealthy++
	h.StoppedUnhealthy = true
	h.Reason = ReasonUnhealthy
	h.NextStart = in.Now.Add(restartDelay(pol, h.Failures))
	h.CriticalSince, h.StableBefore = time.Time{}, false
	return h, true, h.NextStart
}

// exited records an exit seen for the first time: a run of stableAfter or more resets the
// backoff, then the next start waits min, 2×min, 4×min... up to max after the exit.
func exited(h history, c observed, pol state.Restart, stableAfter time.Duration) history {
	if c.FinishedAt.Sub(c.StartedAt) >= stableAfter {
		h.Failures = 0
	}
	h.Failures++
	h.Reason = ReasonCrash
	h.LastExit, h.ExitCode, h.OOMKilled = c.FinishedAt, c.ExitCode, c.OOMKilled
	h.NextStart = c.FinishedAt.Add(restartDelay(pol, h.Failures))
	return h
}

// failedStart records a create or start that failed at now: it is retried with the same
// backoff as a crash.
func failedStart(h history, pol state.Restart, now time.Time, err error) history {
	h.Failures++
	h.Error = err.Error()
	h.NextStart = now.Add(restartDelay(pol, h.Failures))
	return h
}

// Restart backoff defaults, as gilliam.yml documents them.
const (
	defaultMinBackoff = time.Second
	defaultMaxBackoff = time.Minute
)

// restartDelay is the wait before the next start after the n-th failure in a row.
func restartDelay(pol state.Restart, n int) time.Duration {
	lo, hi := pol.MinBackoff, pol.MaxBackoff
	if lo <= 0 {
		lo = defaultMinBackoff
	}
	if hi <= 0 {
		hi = defaultMaxBackoff
	}
	return Backoff{Min: lo, Max: hi}.Delay(n)
}

// Backoff is a capped exponential backoff: Min after the first failure, doubling, never
// more than Max.
type Backoff struct {
	Min, Max time.Duration
}

// Delay is the wait after the n-th failure in a row (n >= 1).
func (b Backoff) Delay(n int) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}
