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

// judgeHealth, case by case: a running instance with a check is stopped once the check has
// been critical past its grace for UnhealthyAfter, with the crash backoff; passing, warning,
// unknown and booting instances are left alone.
func TestDecideUnhealthy(t *testing.T) {
	inst := state.Instance{ID: "a", Release: "r1"}
	running := observed{ID: "c1", Instance: "a", State: "running"}
	base := func(health string, h history) planInput {
		in := planInput{
			Now: t0, StableAfter: time.Minute, UnhealthyAfter: 30 * time.Second, CanRemove: true, Confirmed: true,
			Assigned: []state.Instance{inst}, Containers: []observed{running},
			Restart:    map[string]state.Restart{"r1": {MinBackoff: time.Second, MaxBackoff: 8 * time.Second}},
			CheckGrace: map[string]time.Duration{"r1": 10 * time.Second},
			History:    map[string]history{"a": h},
			Health:     map[string]string{},
		}
		if health != "" {
			in.Health["a"] = health
		}
		return in
	}
	started := t0.Add(-time.Hour)
	tests := []struct {
		name      string
		in        planInput
		stop      bool
		wake      time.Time
		failures  int
		critSince time.Time
	}{
		{name: "passing", in: base("passing", history{Started: started})},
		{name: "warning is not failing", in: base("warning", history{Started: started, CriticalSince: t0.Add(-time.Minute)})},
		{name: "unknown (agent away): never judged", in: base("", history{Started: started, CriticalSince: t0.Add(-time.Minute)}),
			critSince: t0.Add(-time.Minute)},
		{name: "critical within the grace", in: base("critical", history{Started: t0.Add(-5 * time.Second)}),
			wake: t0.Add(5 * time.Second)},
		{name: "critical past the grace: the clock starts", in: base("critical", history{Started: started}),
			wake: t0.Add(30 * time.Second), critSince: t0},
		{name: "critical for less than the threshold", in: base("critical", history{Started: started, CriticalSince: t0.Add(-29 * time.Second)}),
			wake: t0.Add(time.Second), critSince: t0.Add(-29 * time.Second)},
		{name: "critical for the threshold: stopped, first backoff", in: base("critical", history{Started: started, CriticalSince: t0.Add(-30 * time.Second)}),
			stop: true, wake: t0.Add(time.Second), failures: 1},
		{name: "again without a stable run: the backoff doubles", in: base("critical", history{Started: started, Failures: 2, CriticalSince: t0.Add(-time.Minute)}),
			stop: true, wake: t0.Add(4 * time.Second), failures: 3},
		{name: "after passing for a minute: the backoff starts over", in: base("critical", history{Started: started, Failures: 3, CriticalSince: t0.Add(-time.Minute), StableBefore: true}),
			stop: true, wake: t0.Add(time.Second), failures: 1},
		{name: "no check: never judged", in: func() planInput {
			in := base("critical", history{Started: started, CriticalSince: t0.Add(-time.Hour)})
			in.CheckGrace = nil
			return in
		}(), critSince: t0.Add(-time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := decide(tt.in)
			h := p.History["a"]
			if stopped := len(p.Unhealthy) == 1; stopped != tt.stop || len(p.Keep) == len(p.Unhealthy) {
				t.Fatalf("unhealthy %v keep %v, want stop %v", p.Unhealthy, p.Keep, tt.stop)
			}
			if !p.Wake.Equal(tt.wake) {
				t.Errorf("wake %v, want %v", p.Wake, tt.wake)
			}
			if tt.stop && (h.Failures != tt.failures || h.Unhealthy != 1 || !h.StoppedUnhealthy || h.Reason != ReasonUnhealthy || !h.NextStart.Equal(tt.wake)) {
				t.Errorf("history %+v", h)
			}
			if !tt.stop && !h.CriticalSince.Equal(tt.critSince) {
				t.Errorf("critical since %v, want %v", h.CriticalSince, tt.critSince)
			}
		})
	}

	// The exit of a container stopped as unhealthy is not a crash: it waits out the backoff
	// set when it was stopped, and is not counted again.
	in := base("", history{Failures: 1, Unhealthy: 1, StoppedUnhealthy: true, Reason: ReasonUnhealthy, NextStart: t0.Add(time.Second)})
	in.Containers = []observed{{ID: "c1", Instance: "a", State: "exited", StartedAt: t0.Add(-time.Minute), FinishedAt: t0.Add(-100 * time.Millisecond), ExitCode: 137}}
	p := decide(in)
	h := p.History["a"]
	if len(p.Wait) != 1 || len(p.Exited) != 0 || h.Failures != 1 || h.StoppedUnhealthy || h.Reason != ReasonUnhealthy || !p.Wake.Equal(t0.Add(time.Second)) {
		t.Errorf("after the unhealthy stop: wait %v exited %v history %+v wake %v", p.Wait, p.Exited, h, p.Wake)
	}
}

func TestImagesDue(t *testing.T) {
	last := map[string]time.Time{"old": t0.Add(-2 * time.Hour), "edge": t0.Add(-time.Hour), "young": t0.Add(-10 * time.Minute)}
	due, wake := imagesDue(last, t0, time.Hour)
	if !slices.Equal(due, []string{"edge", "old"}) || !wake.Equal(t0.Add(50*time.Minute)) {
		t.Errorf("due %v wake %v", due, wake)
	}
}
