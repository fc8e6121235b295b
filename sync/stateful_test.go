package sync

import (
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Table tests of volumes and the release phase in Reconcile: data in, actions out.

const stateful = `formation: shop
services:
  store:
    image: registry.example/shop/store:1
    ports: [7000]
    volumes: [/data]
    release: {command: [store, migrate]}
    env: {V: "1"}
  web:
    image: registry.example/shop/web:1
    ports: [8080]
    scale: 2
    depends_on: [store]
`

// settle decides and applies until nothing is left to do (tasks taken to succeed, as
// the plan takes them), or fails after n decisions.
func settle(t *testing.T, w *World, m *Memory, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		d := Reconcile(Input{World: w, Memory: *m, Policy: policy()})
		if len(d.Actions) == 0 {
			return
		}
		if i > n-4 {
			for _, a := range d.Actions {
				t.Logf("%T %s", a, a)
			}
		}
		applyAll(t, w, m, d.Actions)
	}
	t.Fatalf("did not settle in %d decisions", n)
}

// commit moves the world's branch to a new commit of file.
func commit(t *testing.T, w *World, sha, file string) {
	t.Helper()
	f, err := schema.Parse("gilliam.yml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	tg := &w.Repos[0].Targets[0]
	tg.Commit, tg.Source = sha, &Source{Formation: f, Trees: map[string]string{}}
	w.Repos[0].Refs[tg.Ref] = sha
}

func hostOf(w *World, id string) string {
	for h, a := range w.KV.Assignments {
		for _, inst := range a.Instances {
			if inst.ID == id {
				return h
			}
		}
	}
	return ""
}

func TestReleasePhaseGatesTheFirstDeployAndRecordsVolumes(t *testing.T) {
	w, m := world(t, "c1", stateful), memory()
	var sawTask bool
	for i := 0; i < 30; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		if len(d.Actions) == 0 {
			break
		}
		for _, a := range d.Actions {
			if p, ok := a.(Place); ok {
				for _, as := range p.Assignments {
					for _, task := range as.Tasks {
						sawTask = true
						// The store runs nothing while its release phase runs; the web,
						// which depends on it, neither.
						if len(w.KV.Desired["shop"].Instances()) != 0 {
							t.Fatalf("instances desired while the release phase runs: %v", w.KV.Desired["shop"].Instances())
						}
						if task.Kind != state.TaskKindRelease || task.Service != "store" {
							t.Fatalf("task %+v", task)
						}
					}
				}
			}
		}
		applyAll(t, w, &m, d.Actions)
	}
	if !sawTask {
		t.Fatal("no release phase task was assigned")
	}
	ds := w.KV.Desired["shop"].Services["store"]
	if ds.ReleasePhase == nil || ds.ReleasePhase.State != state.PhaseSucceeded || !ds.Exclusive {
		t.Fatalf("store: %+v", ds)
	}
	if n := len(w.KV.Desired["shop"].Instances()); n != 3 {
		t.Fatalf("%d instances desired", n)
	}
	store := state.InstanceID("shop", "store", ds.Latest, 0)
	host := hostOf(w, store)
	slot := w.KV.Volumes["shop"].Slots["store/0"]
	if host == "" || slot.Host != host || len(slot.Paths) != 1 || slot.Paths[0].Path != "/data" {
		t.Fatalf("store on %q, slot %+v", host, slot)
	}
	for h, a := range w.KV.Assignments {
		if len(a.Tasks) != 0 {
			t.Fatalf("host %s still has tasks %v after the phase ended", h, a.Tasks)
		}
	}

	// A new release of the store: its phase runs, then it replaces the old instance on
	// the same host (old stops, new starts: they share the volume).
	commit(t, w, "c2", strings.Replace(stateful, `V: "1"`, `V: "2"`, 1))
	settle(t, w, &m, 30)
	ds2 := w.KV.Desired["shop"].Services["store"]
	if ds2.Latest == ds.Latest || ds2.ReleasePhase.Release != ds2.Latest || ds2.ReleasePhase.State != state.PhaseSucceeded {
		t.Fatalf("second release: %+v", ds2)
	}
	if got := hostOf(w, state.InstanceID("shop", "store", ds2.Latest, 0)); got != host {
		t.Fatalf("the new release of slot store/0 went to %q, not %q where its volume is", got, host)
	}

	// Its host dies: the store is not started elsewhere, and the report says why.
	w.HostFailingSince[host] = w.Now.Add(-time.Hour)
	for i := 0; i < 5; i++ { // no settling: it removes the dead host's registrations each time
		applyAll(t, w, &m, Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions)
	}
	if got := hostOf(w, state.InstanceID("shop", "store", ds2.Latest, 0)); got != "" {
		t.Fatalf("the store runs on %s without its volume", got)
	}
	var reason string
	for _, u := range w.KV.Placement.Unplaced {
		if u.Service == "store" {
			reason = u.Reason
		}
	}
	if !strings.Contains(reason, "its volumes are on host "+host+", which is dead") {
		t.Fatalf("unplaced reason %q (report %+v)", reason, w.KV.Placement.Unplaced)
	}
}

// untilPhaseTask decides and applies until a release phase's task is assigned, writes
// that assignment as it is (without the plan's make-believe success), and returns the
// task and its host.
func untilPhaseTask(t *testing.T, w *World, m *Memory) (state.Task, string) {
	t.Helper()
	for i := 0; i < 30; i++ {
		d := Reconcile(Input{World: w, Memory: *m, Policy: policy()})
		for _, a := range d.Actions {
			p, ok := a.(Place)
			if !ok {
				continue
			}
			for _, as := range p.Assignments {
				if len(as.Tasks) == 0 {
					continue
				}
				for _, as := range p.Assignments {
					w.KV.Assignments[as.Host] = as
				}
				return as.Tasks[0], as.Host
			}
		}
		applyAll(t, w, m, d.Actions)
	}
	t.Fatal("no release phase task")
	return state.Task{}, ""
}

// A first deploy whose release phase fails starts nothing: there is no release to keep
// serving, and the failed one must not serve without its migration.
func TestReleasePhaseFailureHoldsAFirstDeploy(t *testing.T) {
	w, m := world(t, "c1", stateful), memory()
	task, host := untilPhaseTask(t, w, &m)
	w.KV.HostStatus[host] = &state.HostStatus{Host: host, Updated: w.Now, Tasks: []state.TaskStatus{{ID: task.ID, Release: task.Release, State: state.TaskExited, ExitCode: 1,
		Output: []string{"error: no database"}, Ended: w.Now}}}
	settle(t, w, &m, 30)
	ds := w.KV.Desired["shop"].Services["store"]
	if ds.Failed != task.Release || ds.ReleasePhase.State != state.PhaseFailed || ds.Target() != "" {
		t.Fatalf("after the failure: target %q, %+v", ds.Target(), ds)
	}
	if n := len(w.KV.Desired["shop"].Instances()); n != 0 {
		t.Fatalf("%d instances desired after the first release's phase failed: %v", n, w.KV.Desired["shop"].Instances())
	}
	if !strings.Contains(w.KV.Status["shop"].Error, "release phase of release") || !strings.Contains(w.KV.Status["shop"].Error, "error: no database") {
		t.Fatalf("status: %+v", w.KV.Status["shop"])
	}
	if st, _ := rolloutState(w, "shop", w.KV.Desired["shop"]); st != forge.Failure {
		t.Fatalf("commit status %s", st)
	}

	// The next commit's release runs its phase, and deploys once it succeeds.
	commit(t, w, "c2", strings.Replace(stateful, `V: "1"`, `V: "2"`, 1))
	settle(t, w, &m, 30)
	ds = w.KV.Desired["shop"].Services["store"]
	if ds.Latest == task.Release || ds.Target() != ds.Latest || ds.ReleasePhase.State != state.PhaseSucceeded {
		t.Fatalf("the next release: target %q, %+v", ds.Target(), ds)
	}
	if n := len(w.KV.Desired["shop"].Instances()); n != 3 {
		t.Fatalf("%d instances desired after the next release", n)
	}
}

func TestReleasePhaseFailureKeepsTheRunningRelease(t *testing.T) {
	w, m := world(t, "c1", stateful), memory()
	settle(t, w, &m, 30)
	old := w.KV.Desired["shop"].Services["store"].Latest

	commit(t, w, "c2", strings.Replace(stateful, `V: "1"`, `V: "2"`, 1))
	task, host := untilPhaseTask(t, w, &m)
	// While it runs: the old release serves at full scale.
	if deps := w.KV.Desired["shop"].Services["store"].Deployments; len(deps) != 1 || deps[0].Release != old || deps[0].Scale != 1 {
		t.Fatalf("while the phase runs: %+v", deps)
	}
	// The host reports exit 3 with output.
	w.KV.HostStatus[host] = &state.HostStatus{Host: host, Updated: w.Now, Tasks: []state.TaskStatus{{ID: task.ID, Release: task.Release, State: state.TaskExited, ExitCode: 3,
		Output: []string{"migrating", "error: column exists"}, Ended: w.Now}}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	var adv *Advance
	for _, a := range d.Actions {
		if a, ok := a.(Advance); ok {
			adv = &a
		}
	}
	if adv == nil || adv.Status == nil || !strings.Contains(adv.Status.Error, "exit code 3") || !strings.Contains(adv.Status.Error, "error: column exists") {
		t.Fatalf("after the failure: %s %+v", kinds(d.Actions), adv)
	}
	applyAll(t, w, &m, d.Actions)
	settle(t, w, &m, 30)
	ds := w.KV.Desired["shop"].Services["store"]
	if ds.Failed != task.Release || ds.ReleasePhase.State != state.PhaseFailed || ds.Target() != old {
		t.Fatalf("after the failure: %+v", ds)
	}
	if got := hostOf(w, state.InstanceID("shop", "store", old, 0)); got == "" {
		t.Fatal("the old release stopped")
	}
	if !strings.Contains(w.KV.Status["shop"].Error, "release phase of release") {
		t.Fatalf("status: %+v", w.KV.Status["shop"])
	}
	// The commit status says so too.
	if st, desc := rolloutState(w, "shop", w.KV.Desired["shop"]); st != forge.Failure || !strings.Contains(desc, "store: release phase failed: exit code 3") {
		t.Fatalf("commit status: %s %q", st, desc)
	}
	for _, a := range w.KV.Assignments {
		if len(a.Tasks) > 0 {
			t.Fatalf("task still assigned: %v", a.Tasks)
		}
	}
}

// A release phase that fails while an earlier roll-out is under way does not undo that
// roll-out: it goes on to its release.
func TestReleasePhaseFailureDuringARollout(t *testing.T) {
	w, m := world(t, "c1", stateful), memory()
	settle(t, w, &m, 30)
	one := w.KV.Desired["shop"].Services["store"].Latest
	commit(t, w, "c2", strings.Replace(stateful, `V: "1"`, `V: "2"`, 1))
	store := func() state.DesiredService { return w.KV.Desired["shop"].Services["store"] }
	unhealthy := func(rel string) { delete(w.PassingSince, state.InstanceID("shop", "store", rel, 0)) }
	for i := 0; i < 30 && store().Rollout == nil; i++ {
		applyAll(t, w, &m, Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions)
	}
	two := store().Latest
	if r := store().Rollout; r == nil || r.To != two || r.From != one {
		t.Fatalf("roll-out: %+v", r)
	}
	commit(t, w, "c3", strings.Replace(stateful, `V: "1"`, `V: "3"`, 1))
	var task state.Task
	for i := 0; i < 30 && store().ReleasePhase.State != state.PhaseFailed; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		applyAll(t, w, &m, d.Actions)
		unhealthy(two) // release two's instance is not healthy yet: its roll-out is under way
		for h, a := range w.KV.Assignments {
			for _, tk := range a.Tasks {
				task = tk
				w.KV.HostStatus[h] = &state.HostStatus{Host: h, Updated: w.Now, Tasks: []state.TaskStatus{{ID: tk.ID, Release: tk.Release, State: state.TaskExited, ExitCode: 1, Ended: w.Now}}}
			}
		}
	}
	ds := store()
	if task.ID == "" || ds.ReleasePhase.State != state.PhaseFailed || ds.Failed == two || ds.Target() != two {
		t.Fatalf("after the failed phase: %+v (phase %+v)", ds, ds.ReleasePhase)
	}
	if ds.Rollout == nil || ds.Rollout.To != two {
		t.Fatalf("the roll-out to two was undone: %+v", ds.Rollout)
	}
	settle(t, w, &m, 30)
	if ds := store(); ds.Rollout != nil || len(ds.Deployments) != 1 || ds.Deployments[0].Release != two {
		t.Fatalf("settled on %+v", ds.Deployments)
	}
}
