package sync

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The release phase: a command run once per release, in a one-off container of the new
// release, before its roll-out starts (docs/sync.md, "The release phase").
//
// The leader follows it in the service's desired state (DesiredService.ReleasePhase):
// pending from the deploy that makes the release latest; running once the roll-out is
// due (dependencies settled and healthy), which makes placement assign its task to a
// host, like an instance; succeeded or failed once that host reports the task's end
// (HostStatus.Tasks). The roll-out waits for succeeded. A failure marks the release failed
// (the running release keeps serving) and says why in the formation's status.
//
// It runs on a host, through the host's assignment, rather than on the leader: the
// leader has no engine of its own on a fleet, and a host daemon already pulls images,
// holds registry credentials and runs containers of the release with its env and limits.

// phaseSlack is how long past its timeout the leader waits for a host to report a release
// phase before it counts it failed: the pull, a host restart, a slow report.
const phaseSlack = 5 * time.Minute

// statefulOf derives a release's volumes and release phase from its service.
func statefulOf(svc *schema.Service, entrypoint []string) ([]state.Volume, *state.Phase) {
	var volumes []state.Volume
	for _, v := range svc.Volumes {
		volumes = append(volumes, state.Volume{Path: v.Path, Size: v.Size})
	}
	if svc.Release == nil {
		return volumes, nil
	}
	ph := &state.Phase{Timeout: svc.Release.Timeout, Command: svc.Release.Command}
	if svc.Release.Shell {
		ph.Command = []string{"/bin/sh", "-c", svc.Release.Command[0]}
	}
	switch {
	case svc.Type == schema.TypeBuildpack:
		// Through the launcher, which sets up the buildpacks' environment first.
		ph.Entrypoint = []string{"/cnb/lifecycle/launcher", "--"}
	case svc.Release.Shell:
		ph.Entrypoint, ph.Command = ph.Command[:2], ph.Command[2:]
	default:
		ph.Entrypoint = entrypoint // the image's own, as for the instances
	}
	return volumes, ph
}

// nextPhase is the release phase of a service whose latest release is latest: the one
// recorded when it is for that release (a commit that keeps the release keeps its
// phase), a pending one for a new release with a release command, else none.
func nextPhase(cur *state.PhaseRun, svc *schema.Service, latest string) *state.PhaseRun {
	if svc.Release == nil {
		return nil
	}
	if cur != nil && cur.Release == latest {
		return cur
	}
	return &state.PhaseRun{Release: latest, State: state.PhasePending}
}

// withPhase runs the release phase of a service before advance rolls its target out.
// It returns the service, what changed ("" for nothing), the formation status to write
// on a failure (nil otherwise), and whether the roll-out must wait.
func withPhase(w *World, formation, name string, ds state.DesiredService, blocked bool) (state.DesiredService, string, string, bool) {
	ph := ds.ReleasePhase
	target := ds.Target()
	if ph == nil || ph.Release != target || ph.State == state.PhaseSucceeded {
		return ds, "", "", false
	}
	if ph.State == state.PhaseFailed {
		return ds, "", "", true // Target no longer names it once Failed is set
	}
	if running(ds, target) {
		return ds, "", "", false // already out (a phase added after its deploy): nothing to hold
	}
	next := *ph
	ds.ReleasePhase = &next
	switch ph.State {
	case state.PhasePending:
		if blocked {
			return ds, "", "", true
		}
		next.State, next.Started = state.PhaseRunning, w.Now.UTC()
		next.Task = state.ReleaseTaskID(formation, name, target)
		return ds, fmt.Sprintf("release phase of release %s started", short(target)), "", true
	}
	// Running: has a host reported its end?
	rel := w.KV.Releases[formation][target]
	for host, hs := range w.KV.HostStatus {
		for _, ts := range hs.Tasks {
			if ts.ID != ph.Task || ts.Release != target || !ts.Over() {
				continue
			}
			next.Host, next.Ended, next.ExitCode, next.Output, next.Error = host, ts.Ended, ts.ExitCode, ts.Output, ts.Error
			if next.Ended.IsZero() {
				next.Ended = w.Now.UTC()
			}
			if ts.State == state.TaskExited && ts.ExitCode == 0 {
				next.State = state.PhaseSucceeded
				return ds, fmt.Sprintf("release phase of release %s succeeded on %s", short(target), host), "", false
			}
			if next.Error == "" {
				next.Error = fmt.Sprintf("exit code %d", ts.ExitCode)
			}
			return failPhase(ds, &next, host)
		}
	}
	if rel != nil && rel.Phase != nil && w.Now.Sub(ph.Started) > rel.Phase.Timeout+phaseSlack {
		next.Ended = w.Now.UTC()
		next.Error = fmt.Sprintf("no host reported its end within %s (its timeout %s, and %s for pulling and reporting)",
			rel.Phase.Timeout+phaseSlack, rel.Phase.Timeout, phaseSlack)
		return failPhase(ds, &next, "")
	}
	return ds, "", "", true
}

func failPhase(ds state.DesiredService, ph *state.PhaseRun, host string) (state.DesiredService, string, string, bool) {
	ph.State = state.PhaseFailed
	ds.Failed = ph.Release
	where := ""
	if host != "" {
		where = " on " + host
	}
	why := fmt.Sprintf("release phase of release %s failed%s: %s", short(ph.Release), where, ph.Error)
	if n := len(ph.Output); n > 0 {
		why += "; last output: " + strings.Join(ph.Output[max(0, n-3):], " | ")
	}
	return ds, why + "; the running release keeps serving", why, false
}

// running says whether release runs already at some scale.
func running(ds state.DesiredService, release string) bool {
	for _, d := range ds.Deployments {
		if d.Release == release && d.Scale > 0 {
			return true
		}
	}
	return false
}

// phaseStatus is the formation status that says a release phase failed, over the one
// the snapshot holds.
func phaseStatus(w *World, formation, why string) *state.FormationStatus {
	st := &state.FormationStatus{Formation: formation}
	if prev := w.KV.Status[formation]; prev != nil {
		c := *prev
		st = &c
	}
	st.Error = why
	st.Updated = w.Now.UTC()
	return st
}

// releaseTasks are the release phases running now, as tasks for placement.
func releaseTasks(w *World) []state.Task {
	var out []state.Task
	for _, f := range w.KV.Formations() {
		d := w.KV.Desired[f]
		if d == nil {
			continue
		}
		for _, name := range sortedServices(d) {
			ph := d.Services[name].ReleasePhase
			if ph != nil && ph.State == state.PhaseRunning && ph.Task != "" {
				out = append(out, state.Task{ID: ph.Task, Kind: state.TaskKindRelease, Formation: f, Service: name, Release: ph.Release})
			}
		}
	}
	return out
}

// wakeForPhase asks to decide again when a running release phase is past its time.
func wakeForPhase(w *World, formation string, ds state.DesiredService, d *Decision) {
	ph := ds.ReleasePhase
	if ph == nil || ph.State != state.PhaseRunning {
		return
	}
	if rel := w.KV.Releases[formation][ph.Release]; rel != nil && rel.Phase != nil {
		d.wakeAt(ph.Started.Add(rel.Phase.Timeout + phaseSlack + time.Millisecond))
	}
}

// passTasks records, in a plan's copy of the world, every task of an assignment as
// ended with exit 0 on its host.
func passTasks(kv *state.Snapshot, as *state.Assignment) {
	if len(as.Tasks) == 0 {
		return
	}
	hs := &state.HostStatus{Host: as.Host}
	if prev := kv.HostStatus[as.Host]; prev != nil {
		c := *prev
		hs = &c
	}
	hs.Tasks = nil
	for _, t := range as.Tasks {
		hs.Tasks = append(hs.Tasks, state.TaskStatus{ID: t.ID, Release: t.Release, State: state.TaskExited})
	}
	kv.HostStatus[as.Host] = hs
}

func sortedServices(d *state.Desired) []string {
	out := make([]string, 0, len(d.Services))
	for n := range d.Services {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// runsOn is what a host runs: its instances, and its tasks as instances of their release
// (a release phase needs the release's config vars sealed to its host too).
func runsOn(a *state.Assignment) []state.Instance {
	if len(a.Tasks) == 0 {
		return a.Instances
	}
	out := slices.Clone(a.Instances)
	for _, t := range a.Tasks {
		out = append(out, state.Instance{ID: t.ID, Formation: t.Formation, Service: t.Service, Release: t.Release})
	}
	return out
}

// phaseFailed says the service's latest release failed in its release phase.
func phaseFailed(ds state.DesiredService) bool {
	ph := ds.ReleasePhase
	return ph != nil && ph.State == state.PhaseFailed && ph.Release == ds.Failed
}
