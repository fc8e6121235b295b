package hostd

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// statusWriter paces the writes of the host's status: a change is written at most every
// StatusInterval, an unchanged status at least every StatusRefresh, and after a failed
// write the next pass writes whatever it has.
type statusWriter struct {
	last    *state.HostStatus // what was written last
	lastAt  time.Time
	pending bool // a write failed: write again, changed or not
}

// due says whether st is to be written at now; when it is not, at is when it will be
// (zero: not before it changes).
func (w *statusWriter) due(st *state.HostStatus, now time.Time, interval, refresh time.Duration) (write bool, at time.Time) {
	same := w.last != nil && !w.pending && sameStatus(w.last, st)
	switch {
	case same && now.Sub(w.lastAt) < refresh:
		return false, w.lastAt.Add(refresh)
	case now.Sub(w.lastAt) < interval:
		return false, w.lastAt.Add(interval)
	}
	return true, time.Time{}
}

func (w *statusWriter) wrote(st *state.HostStatus, at time.Time, err error) {
	if err != nil {
		w.pending = true
		return
	}
	w.last, w.lastAt, w.pending = st, at, false
}

func sameStatus(a, b *state.HostStatus) bool {
	return a.Address == b.Address && reflect.DeepEqual(a.Instances, b.Instances) && reflect.DeepEqual(a.Strays, b.Strays) &&
		reflect.DeepEqual(a.ImagesRemoved, b.ImagesRemoved) && reflect.DeepEqual(a.Tasks, b.Tasks) && reflect.DeepEqual(a.Volumes, b.Volumes)
}

// report writes the host's status when it is due, and returns when the next write is.
func (d *Daemon) report(ctx context.Context, a *state.Assignment, plan plan, p *pass, registered map[string]bool) time.Time {
	st := d.hostStatus(a, plan, p, registered)
	d.countInstances(st)
	d.mu.Lock()
	write, at := d.status.due(st, p.now, d.cfg.StatusInterval, d.cfg.StatusRefresh)
	d.mu.Unlock()
	if !write {
		return at
	}
	if p.agent == nil {
		d.mu.Lock()
		d.status.wrote(st, p.now, fmt.Errorf("consul unreachable"))
		d.mu.Unlock()
		return time.Time{} // Consul is away: the status waits for it (resync)
	}
	st.Updated = time.Now().UTC()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	err := d.store.PutHostStatus(ctx, st)
	if err != nil {
		p.fail(fmt.Errorf("write host status: %w", err))
	}
	d.mu.Lock()
	d.status.wrote(st, p.now, err)
	d.mu.Unlock()
	return time.Time{}
}

// hostStatus is what the host reports after a pass: every assigned instance as it is now,
// and the strays.
func (d *Daemon) hostStatus(a *state.Assignment, plan plan, p *pass, registered map[string]bool) *state.HostStatus {
	st := &state.HostStatus{Host: d.cfg.ID, Address: d.cfg.Advertise, Logs: d.cfg.LogsURL, Started: d.started, Instances: []state.InstanceStatus{},
		Tasks: p.tasks, Volumes: p.volumes}
	others := map[string]observed{} // containers of assigned instances that do not run
	for _, list := range [][]observed{plan.Start, plan.Wait, plan.Hold, plan.Remove, plan.Unhealthy} {
		for _, c := range list {
			others[c.Instance] = c
		}
	}
	d.mu.Lock()
	history := maps.Clone(d.history)
	st.ImagesRemoved = slices.Clone(d.imagesRemoved)
	d.mu.Unlock()
	for _, inst := range a.Instances {
		s := state.InstanceStatus{ID: inst.ID, Release: inst.Release, State: "pending"}
		h := history[inst.ID]
		s.Restarts, s.ExitCode, s.Logs = h.Restarts, h.ExitCode, h.Logs
		s.CrashLoop = h.Failures >= crashLoop
		s.RestartReason, s.UnhealthyRestarts = h.Reason, h.Unhealthy
		if c, ok := p.running[inst.ID]; ok {
			s.Container, s.State = shortID(c.ID), "running"
			s.Registered = registered[inst.ID]
			if rel := p.releases[inst.Release]; rel != nil {
				s.Address = address(d.cfg.Advertise, primaryPort(rel, c))
				s.Health = health(p.agent, inst.ID, s.Registered, checked(rel))
			}
		} else if c, ok := others[inst.ID]; ok {
			s.Container, s.State = shortID(c.ID), c.State
		}
		if s.State != "running" && p.now.Before(h.NextStart) {
			s.NextRestart = h.NextStart.UTC()
		}
		switch {
		case h.Error != "":
			s.Error = h.Error
			if s.Container == "" {
				s.State = "failed"
			}
		case p.notes[inst.ID] != "":
			s.Error = p.notes[inst.ID]
			if s.State == "pending" && p.relErr[inst.Release] == nil {
				s.State = "pulling"
			}
		case h.StoppedUnhealthy || (h.Reason == ReasonUnhealthy && s.State != "running"):
			s.Error = fmt.Sprintf("unhealthy: check critical for %s past its grace; restarted %d times for it", d.cfg.UnhealthyAfter, h.Unhealthy)
		case s.CrashLoop:
			s.Error = fmt.Sprintf("crash loop: exited with code %d, %d times in a row", h.ExitCode, h.Failures)
			if h.OOMKilled {
				s.Error += " (out of memory)"
			}
		}
		st.Instances = append(st.Instances, s)
	}
	for id := range plan.StrayAt {
		st.Strays = append(st.Strays, shortID(id))
	}
	sort.Strings(st.Strays)
	return st
}

// health is the status of a registered instance's check on the agent: critical until its
// first check passes; an instance without a check passes while it runs.
func health(agent *agentView, instance string, registered, checked bool) string {
	switch {
	case agent == nil || !registered:
		return ""
	case !checked:
		return api.HealthPassing
	}
	if c := agent.checks[state.CheckID(agent.host, instance)]; c != nil {
		return c.Status
	}
	return api.HealthCritical
}

// countInstances sets the instances gauge from a status report: how many instances are in
// each state and health.
func (d *Daemon) countInstances(st *state.HostStatus) {
	if d.cfg.Metrics == nil {
		return
	}
	n := map[[2]string]int{}
	for _, is := range st.Instances {
		n[[2]string{is.State, is.Health}]++
	}
	counts := make([]metrics.InstanceCount, 0, len(n))
	for k, v := range n {
		counts = append(counts, metrics.InstanceCount{State: k[0], Health: k[1], N: v})
	}
	d.cfg.Metrics.Instances(d.cfg.ID, counts)
}
