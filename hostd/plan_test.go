package hostd

import (
	"slices"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func TestDecide(t *testing.T) {
	inst := func(id string) state.Instance { return state.Instance{ID: id, Release: "r1"} }
	ctr := func(id, instance, st string) observed { return observed{ID: id, Instance: instance, State: st} }
	exitedAt := func(id, instance string, ran time.Duration, finished time.Time) observed {
		return observed{ID: id, Instance: instance, State: "exited", ExitCode: 3, StartedAt: finished.Add(-ran), FinishedAt: finished}
	}
	base := planInput{
		Now: t0, Grace: time.Minute, StableAfter: time.Minute, CanRemove: true, Confirmed: true,
		Restart: map[string]state.Restart{"r1": {MinBackoff: time.Second, MaxBackoff: 8 * time.Second}},
	}
	tests := []struct {
		name    string
		in      func(in *planInput)
		create  []string // instance IDs
		start   []string // container IDs, and below too
		remove  []string
		keep    []string
		wait    []string
		hold    []string
		exited  []string
		wake    time.Time
		history map[string]history // checked when set
	}{
		{name: "nothing", in: func(in *planInput) {}},
		{name: "new instance", in: func(in *planInput) { in.Assigned = []state.Instance{inst("a")} }, create: []string{"a"}},
		{name: "running stays", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{ctr("c1", "a", "running")}
		}, keep: []string{"c1"}},
		{name: "created and never started: started at once", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{ctr("c1", "a", "created")}
		}, start: []string{"c1"}},
		{name: "first exit waits the minimum backoff", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0.Add(-100*time.Millisecond))}
		}, wait: []string{"c1"}, exited: []string{"c1"}, wake: t0.Add(900 * time.Millisecond),
			history: map[string]history{"a": {Failures: 1, LastExit: t0.Add(-100 * time.Millisecond), ExitCode: 3, NextStart: t0.Add(900 * time.Millisecond)}}},
		{name: "exit long ago restarts now", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0.Add(-time.Hour))}
		}, start: []string{"c1"}, exited: []string{"c1"}},
		{name: "the fourth crash in a row waits 8 times the minimum", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.History = map[string]history{"a": {Failures: 3, LastExit: t0.Add(-10 * time.Second)}}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0)}
		}, wait: []string{"c1"}, exited: []string{"c1"}, wake: t0.Add(8 * time.Second)},
		{name: "the backoff stops at the maximum", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.History = map[string]history{"a": {Failures: 10, LastExit: t0.Add(-10 * time.Second)}}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0)}
		}, wait: []string{"c1"}, exited: []string{"c1"}, wake: t0.Add(8 * time.Second)},
		{name: "a stable run resets the backoff", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.History = map[string]history{"a": {Failures: 10, Restarts: 10, LastExit: t0.Add(-10 * time.Minute)}}
			in.Containers = []observed{exitedAt("c1", "a", 2*time.Minute, t0)}
		}, wait: []string{"c1"}, exited: []string{"c1"}, wake: t0.Add(time.Second),
			history: map[string]history{"a": {Failures: 1, Restarts: 10, LastExit: t0, ExitCode: 3, NextStart: t0.Add(time.Second)}}},
		{name: "an exit counts once", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.History = map[string]history{"a": {Failures: 2, LastExit: t0.Add(-time.Second), NextStart: t0.Add(time.Second)}}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0.Add(-time.Second))}
		}, wait: []string{"c1"}, wake: t0.Add(time.Second),
			history: map[string]history{"a": {Failures: 2, LastExit: t0.Add(-time.Second), NextStart: t0.Add(time.Second)}}},
		{name: "unknown release restarts with the defaults", in: func(in *planInput) {
			in.Assigned = []state.Instance{{ID: "a", Release: "r2"}}
			in.Containers = []observed{exitedAt("c1", "a", time.Second, t0)}
		}, wait: []string{"c1"}, exited: []string{"c1"}, wake: t0.Add(defaultMinBackoff)},
		{name: "a failed create waits its backoff", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.History = map[string]history{"a": {Failures: 1, Error: "boom", NextStart: t0.Add(time.Second)}}
		}, wake: t0.Add(time.Second)},
		{name: "dead is removed, to be created anew", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{ctr("c1", "a", "dead")}
		}, remove: []string{"c1"}},
		{name: "paused is left alone", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{ctr("c1", "a", "paused")}
		}, hold: []string{"c1"}},
		{name: "removed from the assignment: drained at once", in: func(in *planInput) {
			in.Known = map[string]bool{"a": true}
			in.Containers = []observed{ctr("c1", "a", "running")}
		}, remove: []string{"c1"}},
		{name: "a stray waits out the grace period", in: func(in *planInput) {
			in.Containers = []observed{ctr("c1", "x", "running")}
		}, wake: t0.Add(time.Minute)},
		{name: "a stray past the grace period goes", in: func(in *planInput) {
			in.StrayAt = map[string]time.Time{"c1": t0.Add(-time.Minute)}
			in.Containers = []observed{ctr("c1", "x", "running")}
		}, remove: []string{"c1"}},
		{name: "strays stay while the assignment is not confirmed", in: func(in *planInput) {
			in.Confirmed = false
			in.StrayAt = map[string]time.Time{"c1": t0.Add(-time.Hour)}
			in.Containers = []observed{ctr("c1", "x", "running")}
		}},
		{name: "nothing is removed while Consul is away", in: func(in *planInput) {
			in.CanRemove = false
			in.Known = map[string]bool{"a": true}
			in.Assigned = []state.Instance{inst("b")}
			in.StrayAt = map[string]time.Time{"c2": t0.Add(-time.Hour)}
			in.Containers = []observed{ctr("c1", "a", "running"), ctr("c2", "x", "running"), exitedAt("c3", "b", time.Second, t0.Add(-time.Hour))}
		}, start: []string{"c3"}, exited: []string{"c3"}},
		{name: "a duplicate goes, the running one stays", in: func(in *planInput) {
			in.Assigned = []state.Instance{inst("a")}
			in.Containers = []observed{ctr("c1", "a", "exited"), ctr("c2", "a", "running")}
		}, keep: []string{"c2"}, remove: []string{"c1"}},
		{name: "replace", in: func(in *planInput) {
			in.Known = map[string]bool{"a": true, "b": true}
			in.Assigned = []state.Instance{inst("b")}
			in.Containers = []observed{ctr("c1", "a", "running")}
		}, create: []string{"b"}, remove: []string{"c1"}},
	}
	ids := func(os []observed) (out []string) {
		for _, o := range os {
			out = append(out, o.ID)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base
			tt.in(&in)
			got := decide(in)
			var create []string
			for _, i := range got.Create {
				create = append(create, i.ID)
			}
			check := func(what string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s: got %v, want %v", what, got, want)
				}
			}
			check("create", create, tt.create)
			check("start", ids(got.Start), tt.start)
			check("remove", ids(got.Remove), tt.remove)
			check("keep", ids(got.Keep), tt.keep)
			check("wait", ids(got.Wait), tt.wait)
			check("hold", ids(got.Hold), tt.hold)
			check("exited", ids(got.Exited), tt.exited)
			if !got.Wake.Equal(tt.wake) {
				t.Errorf("wake: got %v, want %v", got.Wake, tt.wake)
			}
			for id, want := range tt.history {
				h := got.History[id]
				if h.Failures != want.Failures || h.Restarts != want.Restarts || !h.LastExit.Equal(want.LastExit) ||
					h.ExitCode != want.ExitCode || !h.NextStart.Equal(want.NextStart) {
					t.Errorf("history of %s: got %+v, want %+v", id, h, want)
				}
			}
		})
	}
}

func TestDecideForgetsHistoryOfUnassigned(t *testing.T) {
	got := decide(planInput{Now: t0, History: map[string]history{"gone": {Failures: 3}}})
	if _, ok := got.History["gone"]; ok {
		t.Fatal("the history of an instance no longer assigned is kept")
	}
}

func TestStrayClockStartsAtFirstSight(t *testing.T) {
	in := planInput{Now: t0, Grace: time.Minute, CanRemove: true, Confirmed: true,
		Containers: []observed{{ID: "c1", Instance: "x", State: "running"}}}
	p := decide(in)
	if !p.StrayAt["c1"].Equal(t0) || len(p.Remove) != 0 {
		t.Fatalf("first sight: %v, remove %v", p.StrayAt, p.Remove)
	}
	in.StrayAt, in.Now = p.StrayAt, t0.Add(59*time.Second)
	if p = decide(in); len(p.Remove) != 0 {
		t.Fatal("removed before the grace period")
	}
	in.StrayAt, in.Now = p.StrayAt, t0.Add(time.Minute)
	if p = decide(in); len(p.Remove) != 1 {
		t.Fatal("not removed after the grace period")
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: 250 * time.Millisecond, Max: 2 * time.Second}
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, b.Delay(n))
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if d := (Backoff{Min: time.Second, Max: time.Minute}).Delay(1000); d != time.Minute {
		t.Fatalf("a long crash loop: %v", d)
	}
	if d := restartDelay(state.Restart{}, 1); d != defaultMinBackoff {
		t.Fatalf("default minimum: %v", d)
	}
}

func TestFailedStartBacksOff(t *testing.T) {
	pol := state.Restart{MinBackoff: time.Second, MaxBackoff: time.Minute}
	h := failedStart(history{}, pol, t0, errString("port taken"))
	h = failedStart(h, pol, t0, errString("port taken"))
	if h.Failures != 2 || h.Error != "port taken" || !h.NextStart.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("%+v", h)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
