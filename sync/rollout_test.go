package sync

import (
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func svc(deps []state.Deployment, latest string, scale int) state.DesiredService {
	return state.DesiredService{
		Deployments: deps, Latest: latest, LatestCause: "push", FileScale: scale,
		Strategy: state.Strategy{MaxParallel: 1, MinHealthy: 10 * time.Second, Deadline: 5 * time.Minute},
	}
}

func dep(release string, scale int) state.Deployment {
	return state.Deployment{Release: release, Scale: scale}
}

// healthy marks instances 0..n-1 of release as passing since at.
func healthy(p Passing, release string, n int, at time.Time) Passing {
	if p == nil {
		p = Passing{}
	}
	for i := 0; i < n; i++ {
		p[state.InstanceID("f", "web", release, i)] = at
	}
	return p
}

func deps(ds state.DesiredService) string {
	var parts []string
	for _, d := range ds.Deployments {
		parts = append(parts, d.Release+"x"+string(rune('0'+d.Scale)))
	}
	return strings.Join(parts, ",")
}

func TestAdvanceFirstDeployIsImmediate(t *testing.T) {
	ds, what := advance("f", "web", svc(nil, "new", 3), nil, t0, false)
	if deps(ds) != "newx3" || ds.Rollout != nil || what == "" {
		t.Fatalf("%s %+v %q", deps(ds), ds.Rollout, what)
	}
}

func TestAdvanceScaleOnly(t *testing.T) {
	ds := svc([]state.Deployment{dep("a", 2)}, "a", 2)
	three := 3
	ds.ScaleOverride = &three
	ds, what := advance("f", "web", ds, nil, t0, false)
	if deps(ds) != "ax3" || ds.Rollout != nil || !strings.Contains(what, "scaled") {
		t.Fatalf("%s %q", deps(ds), what)
	}
	if _, what := advance("f", "web", ds, nil, t0, false); what != "" {
		t.Fatalf("a settled service changed again: %q", what)
	}
}

// The healthy count never drops below the scale: old instances stop one by one as new
// ones have been healthy for MinHealthy.
func TestAdvanceRollsOutOneAtATime(t *testing.T) {
	ds := svc([]state.Deployment{dep("old", 3)}, "new", 3)
	now := t0
	ds, _ = advance("f", "web", ds, nil, now, false)
	if deps(ds) != "oldx3,newx1" || ds.Rollout == nil || ds.Rollout.From != "old" {
		t.Fatalf("start: %s %+v", deps(ds), ds.Rollout)
	}
	// new-0 passes, but not for long enough: nothing stops.
	p := healthy(nil, "new", 1, now)
	now = now.Add(5 * time.Second)
	if ds, _ = advance("f", "web", ds, p, now, false); deps(ds) != "oldx3,newx1" {
		t.Fatalf("before min_healthy: %s", deps(ds))
	}
	now = now.Add(6 * time.Second)
	if ds, _ = advance("f", "web", ds, p, now, false); deps(ds) != "oldx2,newx2" {
		t.Fatalf("one healthy: %s", deps(ds))
	}
	p = healthy(p, "new", 2, now)
	now = now.Add(11 * time.Second)
	if ds, _ = advance("f", "web", ds, p, now, false); deps(ds) != "oldx1,newx3" {
		t.Fatalf("two healthy: %s", deps(ds))
	}
	p = healthy(p, "new", 3, now.Add(-time.Hour)) // all three long healthy (index 0,1 keep their earlier time below)
	p[state.InstanceID("f", "web", "new", 2)] = now
	now = now.Add(11 * time.Second)
	ds, what := advance("f", "web", ds, p, now, false)
	if deps(ds) != "newx3" || ds.Rollout != nil || !strings.Contains(what, "done") {
		t.Fatalf("done: %s %+v %q", deps(ds), ds.Rollout, what)
	}
}

func TestAdvanceRevertsAfterDeadline(t *testing.T) {
	ds := svc([]state.Deployment{dep("old", 2)}, "bad", 2)
	ds, _ = advance("f", "web", ds, nil, t0, false)
	ds, _ = advance("f", "web", ds, nil, t0.Add(4*time.Minute), false)
	if deps(ds) != "oldx2,badx1" {
		t.Fatalf("before the deadline: %s", deps(ds))
	}
	ds, what := advance("f", "web", ds, nil, t0.Add(6*time.Minute), false)
	if deps(ds) != "oldx2" || ds.Failed != "bad" || ds.Rollout != nil || !strings.Contains(what, "failed") {
		t.Fatalf("after the deadline: %s failed=%q %q", deps(ds), ds.Failed, what)
	}
	// The failed release is not tried again...
	if ds, what = advance("f", "web", ds, nil, t0.Add(7*time.Minute), false); what != "" || deps(ds) != "oldx2" {
		t.Fatalf("retried a failed release: %s %q", deps(ds), what)
	}
	// ...until a newer one arrives.
	ds.Latest = "fixed"
	if ds, _ = advance("f", "web", ds, nil, t0.Add(8*time.Minute), false); deps(ds) != "oldx2,fixedx1" {
		t.Fatalf("newer release: %s", deps(ds))
	}
}

func TestAdvanceNewTargetDuringRollout(t *testing.T) {
	ds := svc([]state.Deployment{dep("a", 2)}, "b", 2)
	ds, _ = advance("f", "web", ds, nil, t0, false)
	ds.Latest = "c"
	ds, what := advance("f", "web", ds, nil, t0.Add(time.Second), false)
	if deps(ds) != "ax2,cx1" || ds.Rollout.From != "a" || !strings.Contains(what, "superseded") {
		t.Fatalf("%s %+v %q", deps(ds), ds.Rollout, what)
	}
	// A rollback to the release being replaced abandons the roll-out at once.
	ds.Pin = &state.Pin{Release: "a"}
	ds, what = advance("f", "web", ds, nil, t0.Add(2*time.Second), false)
	if deps(ds) != "ax2" || ds.Rollout != nil || !strings.Contains(what, "abandoned") {
		t.Fatalf("%s %+v %q", deps(ds), ds.Rollout, what)
	}
}

func TestAdvancePinAndBlocked(t *testing.T) {
	ds := svc([]state.Deployment{dep("new", 2)}, "new", 2)
	ds.Pin = &state.Pin{Release: "old"}
	if _, what := advance("f", "web", ds, nil, t0, true); what != "" {
		t.Fatalf("blocked service started a roll-out: %q", what)
	}
	ds, what := advance("f", "web", ds, nil, t0, false)
	if ds.Rollout == nil || ds.Rollout.To != "old" || ds.Rollout.Cause != "rollback" {
		t.Fatalf("rollback roll-out: %+v %q", ds.Rollout, what)
	}
}
