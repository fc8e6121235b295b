package sync

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// decidePreviewTTL tears down a preview that had no new commit for longer than its TTL.
func decidePreviewTTL(in Input, t Target, ot state.ObservedTarget, d *Decision, touched map[string]bool) {
	st := in.World.KV.Status[ot.Formation]
	if !t.preview() || st == nil || st.Preview == nil || st.TearingDown != "" {
		return
	}
	expires := st.Preview.Updated.Add(st.Preview.TTL)
	if in.World.Now.Before(expires) {
		d.wakeAt(expires)
		return
	}
	age := in.World.Now.Sub(st.Preview.Updated).Round(time.Second)
	d.add(teardown(in.World, t, ot, fmt.Sprintf("no new commit for %s (its ttl is %s)", age, st.Preview.TTL)))
	touched[ot.Formation] = true
}

// decideGoneRefs tears down the previews whose ref is gone (the pull request closed or
// merged, the branch deleted), but only on the word of a listing that succeeded: a failed
// listing, or a cache not yet brought up to date, never tears down.
func decideGoneRefs(in Input, repo RepoView, d *Decision, touched map[string]bool) {
	if !repo.Listed {
		return
	}
	obs := observedOf(in.World.KV, repo.Key)
	keys := make([]string, 0, len(obs.Targets))
	for k := range obs.Targets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ot := obs.Targets[k]
		if !ot.Preview || ot.TornDown || ot.Formation == "" || repo.Refs[ot.Ref] != "" || touched[ot.Formation] {
			continue
		}
		t := Target{Repo: repo.Key, RepoURL: repo.URL, Ref: ot.Ref, File: ot.File}
		d.add(teardown(in.World, t, ot, "its ref "+ot.Ref+" is gone: the pull request closed or merged, or the branch was deleted"))
		touched[ot.Formation] = true
	}
}

func teardown(w *World, t Target, ot state.ObservedTarget, why string) Teardown {
	f := ot.Formation
	st := &state.FormationStatus{Formation: f}
	if prev := w.KV.Status[f]; prev != nil {
		c := *prev
		st = &c
	}
	st.TearingDown, st.Updated = why, w.Now.UTC()
	desired := &state.Desired{Formation: f, Services: map[string]state.DesiredService{}, Updated: w.Now.UTC()}
	if cur := w.KV.Desired[f]; cur != nil {
		desired.Commit = cur.Commit
	}
	obs := withTarget(observedOf(w.KV, t.Repo), t, func(o *state.ObservedTarget) { o.TornDown = true })
	return Teardown{Target: t, Desired: desired, Index: w.KV.DesiredIndex(f), Status: st, Observed: obs, Why: why}
}

// decideTeardowns deletes the keys of formations being torn down once no host is
// assigned any of their instances.
func decideTeardowns(in Input, d *Decision, touched map[string]bool) {
	running := map[string]bool{}
	for _, a := range in.World.KV.Assignments {
		for _, i := range a.Instances {
			running[i.Formation] = true
		}
	}
	for _, f := range in.World.KV.Formations() {
		if st := in.World.KV.Status[f]; st != nil && st.TearingDown != "" && !running[f] && !touched[f] {
			d.add(DeleteFormation{Formation: f})
			touched[f] = true
		}
	}
}

// decideRollouts moves every service a step towards its target (see advance), in
// dependency order: a service whose dependency is not settled and healthy waits.
func decideRollouts(in Input, d *Decision, touched map[string]bool) {
	w := in.World
	for _, f := range w.KV.Formations() {
		current := w.KV.Desired[f]
		if current == nil || touched[f] {
			continue
		}
		next := copyDesired(current)
		var events []state.Event
		var ends []RolloutEnd
		var served []state.Timeline
		timeline := append([]state.Timeline(nil), w.KV.Timeline[f]...)
		timelineChanged := false
		var status *state.FormationStatus
		ready := map[string]bool{}
		for _, name := range dependencyOrder(next) {
			ds := next.Services[name]
			blocked := false
			for _, dep := range ds.DependsOn {
				if _, ok := next.Services[dep]; ok && !ready[dep] {
					blocked = true
				}
			}
			passing := passingOf(w, f, name)
			ds, phase, failure, hold := withPhase(w, f, name, ds, blocked)
			if failure != "" {
				status = phaseStatus(w, f, failure)
			}
			after, what, canary := withCanary(f, name, ds, passing, w.Now, blocked || hold)
			if hold && ds.Rollout != nil && ds.Rollout.To != ds.Target() {
				// While the latest release's phase runs, the roll-out under way goes on.
				cont := ds
				cont.Latest = ds.Rollout.To
				after, what, canary = withCanary(f, name, cont, passing, w.Now, blocked)
				after.Latest = ds.Latest
			}
			ready[name] = !hold && settledAndHealthy(f, name, after, passing, w.Now)
			if end, ok := rolloutEnd(name, ds, after, w.Now); ok {
				ends = append(ends, end)
			}
			changed, done := stepTimeline(timeline, f, name, after, passing, ready[name], w.Now)
			timelineChanged = timelineChanged || changed
			served = append(served, done...)
			for i, e := range []string{phase, what, canary} {
				if e != "" {
					next.Services[name] = after
					rel := after.Target()
					if i == 0 {
						rel = after.ReleasePhase.Release // the phase's, which may not be the target any more
					}
					events = append(events, state.Event{Time: w.Now.UTC(), Service: name, Release: rel, What: e})
				}
			}
			wakeForRollout(after, w.Now, d)
			wakeForPhase(w, f, after, d)
		}
		if !timelineChanged {
			timeline = nil
		}
		if len(events) == 0 {
			if timelineChanged { // the leader's own bookkeeping: the formation is not touched
				d.add(Advance{Desired: current, Timeline: timeline, TimelineOnly: true, Served: served})
			}
			continue
		}
		next.Updated = w.Now.UTC()
		d.add(Advance{Desired: next, Index: w.KV.DesiredIndex(f), Events: events, Status: status,
			History: state.AppendEvents(w.KV.History[f], events...), HistoryIndex: w.KV.HistoryIndex(f),
			Timeline: timeline, Served: served, Rollouts: ends})
		touched[f] = true
	}
}

// wakeForRollout asks to decide again when a roll-out's deadline passes or an instance
// may have been healthy long enough, since neither is a change Consul reports.
func wakeForRollout(ds state.DesiredService, now time.Time, d *Decision) {
	if r := ds.Rollout; r != nil {
		if ds.Strategy.Deadline > 0 {
			d.wakeAt(r.Started.Add(ds.Strategy.Deadline + time.Millisecond))
		}
		if ds.Strategy.MinHealthy > 0 {
			d.wakeAt(now.Add(min(ds.Strategy.MinHealthy, time.Second)))
		}
	}
}

func settledAndHealthy(f, name string, ds state.DesiredService, passing Passing, now time.Time) bool {
	if ds.Canary != nil && len(ds.Deployments) > 1 {
		ds.Deployments = ds.Deployments[:len(ds.Deployments)-1] // the canary, last, does not count
	}
	if ds.Rollout != nil || len(ds.Deployments) != 1 || ds.Deployments[0].Release != ds.Target() {
		return false
	}
	return passing.healthyFor(f, name, ds.Target(), ds.Deployments[0].Scale, 0, now) >= ds.Deployments[0].Scale
}

// passingOf is, for one service, since when each of its passing instances has passed. An
// instance of a release without a check passes while its host reports it running.
func passingOf(w *World, formation, service string) Passing {
	out := Passing{}
	prefix := formation + "-" + service + "-"
	for id, since := range w.PassingSince {
		if strings.HasPrefix(id, prefix) {
			out[id] = since
		}
	}
	for host, hs := range w.KV.HostStatus {
		for _, is := range hs.Instances {
			if !strings.HasPrefix(is.ID, prefix) || is.State != "running" {
				continue
			}
			rel := w.KV.Releases[formation][is.Release]
			if rel != nil && (rel.Check.Type == "none" || len(rel.Ports) == 0) && !isDead(w, host, time.Duration(0)) {
				if _, ok := out[is.ID]; !ok {
					out[is.ID] = hs.Updated
				}
			}
		}
	}
	return out
}

// decideReleaseGC deletes a formation's old releases: per service it keeps the newest
// KeepReleases, and always every release that runs, rolls in or out, is latest, pinned,
// or the last failed (status names it).
func decideReleaseGC(in Input, d *Decision, touched map[string]bool) {
	for _, f := range in.World.KV.Formations() {
		desired := in.World.KV.Desired[f]
		if desired == nil || touched[f] {
			continue
		}
		keep := map[string]bool{}
		for _, ds := range desired.Services {
			for _, dep := range ds.Deployments {
				keep[dep.Release] = true
			}
			keep[ds.Latest], keep[ds.Failed] = true, true
			if ds.Pin != nil {
				keep[ds.Pin.Release] = true
			}
			if ds.Canary != nil {
				keep[ds.Canary.Release] = true
			}
			if ds.Rollout != nil {
				keep[ds.Rollout.From], keep[ds.Rollout.To] = true, true
			}
		}
		releases := make([]*state.Release, 0, len(in.World.KV.Releases[f]))
		for _, r := range in.World.KV.Releases[f] {
			releases = append(releases, r)
		}
		sort.SliceStable(releases, func(i, j int) bool {
			if !releases[i].Created.Equal(releases[j].Created) {
				return releases[i].Created.After(releases[j].Created)
			}
			return releases[i].ID < releases[j].ID
		})
		seen := map[string]int{}
		var drop []*state.Release
		for _, r := range releases {
			seen[r.Service]++
			if !keep[r.ID] && seen[r.Service] > in.Policy.KeepReleases {
				drop = append(drop, r)
			}
		}
		if len(drop) > 0 {
			d.add(CollectReleases{Formation: f, Releases: drop})
		}
	}
}

// maxReported is how many unplaced instances the placement report lists one by one;
// past it, it counts them per formation and service, so one formation that cannot be
// placed never makes the report too large for Consul.
const maxReported = 100

// decidePlacement runs the scheduler over every formation's desired instances and the
// hosts in the catalog, and writes the hosts whose assignment changed, and only those.
func decidePlacement(in Input, d *Decision) {
	w := in.World
	desired, instances := desiredInstances(w)
	taskInsts, tasks := taskInstances(w)
	desired = append(desired, taskInsts...)
	current := map[string][]string{}
	for h, a := range w.KV.Assignments {
		for _, inst := range a.Instances {
			current[h] = append(current[h], inst.ID)
		}
		for _, t := range a.Tasks {
			current[h] = append(current[h], t.ID)
		}
	}
	res := placement.Plan(desired, placementHosts(w), current, w.Now, in.Policy.Placement)
	a := Place{Indexes: map[string]uint64{}, Hosts: map[string]string{}, StopHosts: map[string]string{}, Report: unplacedReport(w, res.Unplaced),
		VolumesIndexes: map[string]uint64{}}
	changed := map[string]*state.Assignment{}
	for _, h := range res.Changed {
		as := &state.Assignment{Host: h, Updated: w.Now.UTC(), Instances: []state.Instance{}, RemoveVolumes: volumesToRemove(w, h)}
		for _, pi := range res.Assignments[h] {
			if t, ok := tasks[pi.ID]; ok {
				as.Tasks = append(as.Tasks, t)
				continue
			}
			as.Instances = append(as.Instances, instances[pi.ID])
		}
		a.Assignments = append(a.Assignments, as)
		a.Indexes[h] = w.KV.AssignmentIndex(h)
		changed[h] = as
	}
	a.Seals = sealsFor(w, changed)
	for _, m := range res.Start {
		if _, ok := tasks[m.Instance.ID]; ok {
			continue
		}
		a.Start, a.Hosts[m.Instance.ID] = append(a.Start, instances[m.Instance.ID]), m.Host
	}
	a.Volumes = newSlots(w, a.Start, a.Hosts)
	for f := range a.Volumes {
		a.VolumesIndexes[f] = w.KV.VolumesIndex(f)
	}
	for _, m := range res.Stop {
		if _, ok := tasks[m.Instance.ID]; ok || strings.HasSuffix(m.Instance.ID, "-release") {
			continue
		}
		inst, ok := instances[m.Instance.ID]
		if !ok {
			inst = state.Instance{ID: m.Instance.ID}
		}
		a.Stop, a.StopHosts[m.Instance.ID] = append(a.Stop, inst), m.Host
	}
	if len(a.Assignments) > 0 || a.Report != nil {
		d.add(a)
	}
	for _, h := range w.Hosts {
		if since, failing := w.HostFailingSince[h.ID]; failing && !isDead(w, h.ID, in.Policy.Placement.DeadAfter) {
			d.wakeAt(since.Add(in.Policy.Placement.DeadAfter + time.Millisecond))
		}
	}
}

// desiredInstances are every formation's desired instances as the scheduler takes them
// (resources, constraints, hosts to avoid, volume pins), and the instances by ID.
func desiredInstances(w *World) ([]placement.Instance, map[string]state.Instance) {
	var desired []placement.Instance
	instances := map[string]state.Instance{}
	avoid := unhealthyHosts(w)
	for _, f := range w.KV.Formations() {
		ds := w.KV.Desired[f]
		if ds == nil {
			continue
		}
		for _, inst := range ds.Instances() {
			var res placement.Resources
			if rel := w.KV.Releases[f][inst.Release]; rel != nil {
				res = placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory}
			}
			instances[inst.ID] = inst
			cs := constraints(ds.Services[inst.Service].Constraints)
			for _, h := range avoid[inst.Release] {
				cs = append(cs, placement.Constraint{Key: hostLabel, Op: placement.OpNotEqual, Value: h})
			}
			desired = append(desired, placement.Instance{ID: inst.ID, Formation: f, Service: inst.Service, Release: inst.Release,
				Resources: res, Constraints: cs, Host: pinOf(w, inst)})
		}
	}
	return desired, instances
}

// hostLabel is a label every host has for placement, its ID: what a constraint that keeps
// a release off one host names.
const hostLabel = "gilliam.host"

// unhealthyAfter is how many restarts for a failing check an instance may have on one
// host before its release avoids that host.
const unhealthyAfter = 3

// unhealthyHosts are, per release, the hosts where one of its instances was restarted
// for a failing check unhealthyAfter times or more: the release is placed elsewhere, for
// as long as that host's status remembers it.
func unhealthyHosts(w *World) map[string][]string {
	out := map[string][]string{}
	hosts := make([]string, 0, len(w.KV.HostStatus))
	for h := range w.KV.HostStatus {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		for _, is := range w.KV.HostStatus[h].Instances {
			if is.UnhealthyRestarts >= unhealthyAfter && !slices.Contains(out[is.Release], h) {
				out[is.Release] = append(out[is.Release], h)
			}
		}
	}
	return out
}

func placementHosts(w *World) []placement.Host {
	out := make([]placement.Host, 0, len(w.Hosts))
	for _, h := range w.Hosts {
		labels := maps.Clone(h.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[hostLabel] = h.ID
		critical := w.HostFailingSince[h.ID]
		if w.NodeDown[h.ID] && !critical.IsZero() {
			critical = time.Time{}.Add(time.Nanosecond) // dead at once: long past any dead_after
		}
		out = append(out, placement.Host{ID: h.ID, Labels: labels, CriticalSince: critical,
			Capacity: placement.Resources{CPU: h.Capacity.CPU, Memory: h.Capacity.Memory}})
	}
	return out
}

// unplacedReport is the placement report for what could not be placed, or nil when the
// one in Consul says the same.
func unplacedReport(w *World, unplaced []placement.Unplaced) *state.PlacementReport {
	report := &state.PlacementReport{Unplaced: []state.UnplacedInstance{}, Updated: w.Now.UTC()}
	sort.Slice(unplaced, func(i, j int) bool { return unplaced[i].Instance.ID < unplaced[j].Instance.ID })
	counts := map[[3]string]int{}
	for i, u := range unplaced {
		if i < maxReported {
			report.Unplaced = append(report.Unplaced, state.UnplacedInstance{Instance: u.Instance.ID,
				Formation: u.Instance.Formation, Service: u.Instance.Service, Reason: u.Reason})
			continue
		}
		counts[[3]string{u.Instance.Formation, u.Instance.Service, u.Reason}]++
	}
	var keys [][3]string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Join(keys[i][:], " ") < strings.Join(keys[j][:], " ") })
	for _, k := range keys {
		report.Unplaced = append(report.Unplaced, state.UnplacedInstance{Instance: fmt.Sprintf("(%d more)", counts[k]),
			Formation: k[0], Service: k[1], Reason: k[2]})
	}
	prev := w.KV.Placement
	if prev != nil && len(prev.Unplaced) == len(report.Unplaced) && fmt.Sprint(prev.Unplaced) == fmt.Sprint(report.Unplaced) {
		return nil // the same (an empty one included: nothing to say)
	}
	return report
}

// decideDeadHosts removes from the catalog the registrations of hosts dead for longer
// than DeadAfter (their liveness service and their instances): Consul would keep them,
// critical, until the dead node is reaped, 72 hours by default, and discovery and the
// router would go on listing them. It is level-triggered: while a dead host has
// registrations listed, they are removed again every RederegisterAfter (whatever put
// them back), and a host that came back and died again is removed again.
func decideDeadHosts(in Input, d *Decision) {
	listed := map[string]bool{}
	for _, h := range in.World.Hosts {
		listed[h.ID] = true
	}
	for _, reg := range in.World.Registrations {
		listed[reg.Host] = true
	}
	hosts := make([]string, 0, len(listed))
	for h := range listed {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		last, done := in.Memory.Deregistered[h]
		if isDead(in.World, h, in.Policy.Placement.DeadAfter) && (!done || in.World.Now.Sub(last) >= RederegisterAfter) {
			d.add(DeregisterDead{Host: h})
		}
	}
}

// RederegisterAfter is how long after removing a dead host's registrations the leader
// removes those it finds listed again.
const RederegisterAfter = 5 * time.Second

// isDead says whether a host's liveness check has failed for longer than after.
func isDead(w *World, host string, after time.Duration) bool {
	since, failing := w.HostFailingSince[host]
	return failing && (w.NodeDown[host] || w.Now.Sub(since) >= after)
}

func constraints(cs []state.Constraint) []placement.Constraint {
	out := make([]placement.Constraint, 0, len(cs))
	for _, c := range cs {
		out = append(out, placement.Constraint{Key: c.Key, Op: placement.Op(c.Op), Value: c.Value})
	}
	return out
}
