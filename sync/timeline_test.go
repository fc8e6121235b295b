package sync

import (
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// The deploy timeline is data Reconcile writes with the clock it is given: a commit
// detected, its image made, its release written, its first instance passing, its roll-out
// done; the push-to-serving metric is the span of that record.
func TestReconcileDeployTimeline(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	id := "repo refs/heads/main gilliam.yml"
	w.Repos[0].Targets[0].Source.Detected = t0.Add(-3 * time.Second)
	var served []state.Timeline
	var ends []RolloutEnd
	run := func(commit string) {
		t.Helper()
		for i := 0; i < 40; i++ {
			w.Now = w.Now.Add(time.Second)
			d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
			if len(d.Actions) == 0 && d.Wake.IsZero() {
				return
			}
			if len(d.Actions) == 0 { // waiting for an instance to have passed long enough
				w.Now = d.Wake
				continue
			}
			for _, a := range d.Actions {
				switch a := a.(type) {
				case ResolveImages:
					// What the executor would record of a build that took 5 s.
					m.Images[id] = ImagesOutcome{Commit: commit, Images: map[string]string{"web": "r/shop/web@sha256:" + commit},
						Built: map[string]bool{"web": true}, Timings: map[string]BuildTiming{"web": {Started: w.Now, Done: w.Now.Add(5 * time.Second)}}}
					w.Now = w.Now.Add(5 * time.Second)
					continue
				case Advance:
					served = append(served, a.Served...)
					ends = append(ends, a.Rollouts...)
				}
				applyAll(t, w, &m, []Action{a})
			}
			// Instances the dry run placed pass from a second after now on.
			for inst, since := range w.PassingSince {
				if since.Before(t0) {
					w.PassingSince[inst] = w.Now.Add(time.Second)
				}
			}
		}
		t.Fatal("did not settle in 40 decisions")
	}
	run("c1")
	tl := w.KV.Timeline["shop"]
	if len(tl) != 1 {
		t.Fatalf("timeline: %+v", tl)
	}
	e := tl[0]
	steps := []time.Time{e.Detected, e.BuildStarted, e.Built, e.Released, e.FirstPassing, e.RolloutDone}
	for i, at := range steps {
		if at.IsZero() || (i > 0 && at.Before(steps[i-1])) {
			t.Fatalf("step %d of %+v: missing or out of order", i, e)
		}
	}
	if e.Result != "done" || e.Commit != "c1" || e.Cause != "push" || e.Service != "web" || e.Built.Sub(e.BuildStarted) != 5*time.Second ||
		!e.Detected.Equal(t0.Add(-3*time.Second)) {
		t.Fatalf("entry: %+v", e)
	}
	if len(served) != 1 || served[0].Release != e.Release {
		t.Fatalf("served once: %+v", served)
	}

	// A second commit: a roll-out, a second entry; the first stays as it was.
	w.Repos[0].Targets[0].Commit, w.Repos[0].Refs["refs/heads/main"] = "c2", "c2"
	w.Repos[0].Targets[0].Source = &Source{Formation: w.Repos[0].Targets[0].Source.Formation, Trees: map[string]string{}, Detected: w.Now}
	run("c2")
	tl = w.KV.Timeline["shop"]
	if len(tl) != 2 || tl[0] != e || tl[1].Result != "done" || tl[1].Commit != "c2" || tl[1].RolloutDone.Before(tl[1].FirstPassing) {
		t.Fatalf("after c2: %+v", tl)
	}
	if len(ends) != 1 || ends[0].Result != "done" || ends[0].Duration <= 0 {
		t.Fatalf("roll-outs ended: %+v", ends)
	}
	// Settled: nothing more to write.
	w.Now = w.Now.Add(time.Minute)
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("settled, yet: %s", kinds(d.Actions))
	}
}

// A release replaced before it served is superseded; one reverted at its deadline failed.
func TestStepTimelineEnds(t *testing.T) {
	tl := []state.Timeline{{Service: "web", Release: "a", Released: t0}, {Service: "web", Release: "b", Released: t0}}
	after := state.DesiredService{Latest: "b", Deployments: []state.Deployment{{Release: "old", Scale: 1}}}
	changed, served := stepTimeline(tl, "shop", "web", after, Passing{}, false, t0.Add(time.Second))
	if !changed || len(served) != 0 || tl[0].Result != "superseded" || tl[1].Result != "" {
		t.Fatalf("superseded: %+v", tl)
	}
	after = state.DesiredService{Latest: "b", Failed: "b", Deployments: []state.Deployment{{Release: "old", Scale: 1}}}
	if changed, _ := stepTimeline(tl, "shop", "web", after, Passing{}, false, t0.Add(2*time.Second)); !changed || tl[1].Result != "failed" {
		t.Fatalf("failed: %+v", tl)
	}
	if changed, _ := stepTimeline(tl, "shop", "web", after, Passing{}, false, t0.Add(3*time.Second)); changed {
		t.Fatal("an ended entry changed again")
	}
}

// applyTimeline applies the decisions that only move deploy timelines on (instances that
// pass, roll-outs done), for tests of other rules that then expect a settled world.
func applyTimeline(t *testing.T, w *World, m *Memory) {
	t.Helper()
	for i := 0; i < 5; i++ {
		d := Reconcile(Input{World: w, Memory: *m, Policy: policy()})
		if len(d.Actions) == 0 {
			return
		}
		for _, a := range d.Actions {
			if adv, ok := a.(Advance); !ok || !adv.TimelineOnly {
				return
			}
		}
		applyAll(t, w, m, d.Actions)
	}
}
