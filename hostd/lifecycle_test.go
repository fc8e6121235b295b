package hostd_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A crash-looping instance is restarted, its container the same, with waits that double
// from the release's minimum and stop at its maximum; its status shows the crash loop, the
// exit code and the last lines it wrote.
func TestCrashLoopBacksOffToTheCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pol := state.Restart{MinBackoff: 500 * time.Millisecond, MaxBackoff: 4 * time.Second}
	rel := e.release(t, "crash", func(r *state.Release) {
		r.Env["EXIT_CODE"] = "3"
		r.Restart = pol
	})
	inst := instances(rel, 1)
	seen := e.containerEvents(t)
	e.run(t, e.config(t), nil)
	e.assign(t, inst)

	starts := func() (out []time.Time, ids []string) {
		for _, m := range seen() {
			if m.Action == events.ActionStart {
				out = append(out, time.Unix(0, m.TimeNano))
				ids = append(ids, m.Actor.ID)
			}
		}
		return out, ids
	}
	testenv.Eventually(t, 60*time.Second, "8 starts", func() bool { s, _ := starts(); return len(s) >= 8 })
	times, ids := starts()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("restarts made new containers: %v", ids)
		}
	}
	var gaps []time.Duration
	for i := 1; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	t.Logf("gaps between starts: %v", gaps)
	// A gap is the run (a few milliseconds), the backoff, and the time to notice the exit
	// and start the container again (the engine takes a few hundred milliseconds, more on
	// a busy machine under -race, up to seconds at a load of 40): never shorter than the
	// backoff, and shorter than the backoff plus 12s (seen: 13.9s for a 2s backoff while
	// the suite ran), which a backoff that kept doubling past its cap (4s) passes by the
	// seventh gap (0.5s doubled six times is 32s).
	for i, g := range gaps {
		want := hostd.Backoff{Min: pol.MinBackoff, Max: pol.MaxBackoff}.Delay(i + 1)
		limit := want + 12*time.Second
		if g < want || g >= limit {
			t.Errorf("gap %d: %v, want %v to %v", i+1, g, want, limit)
		}
	}
	// They grow: 0.5s, 1s, 2s, then 4s, 4s...: the lower bounds above hold each gap to its
	// backoff, which grows, and the upper ones keep out a gap that doubled past the cap. (A
	// comparison of two gaps would measure the machine: under load the time to notice an
	// exit and start the container again varies by seconds.)
	// The status is written at a limited rate and must catch the container between two runs
	// (its logs are the last run's): several crash cycles on a busy machine.
	testenv.Eventually(t, 30*time.Second, "the crash loop in the status", func() bool {
		s, ok := instanceStatus(e.status(t), inst[0].ID)
		return ok && s.CrashLoop && s.ExitCode == 3 && s.Restarts >= 3 && strings.Contains(s.Error, "crash loop") &&
			slices.Equal(s.Logs, []string{"testapp: exiting with 3 as asked"}) // the last run's lines only
	})
	s, _ := instanceStatus(e.status(t), inst[0].ID)
	t.Logf("status: %+v", s)
}

// An instance leaves the catalog before it is stopped; one that ignores SIGTERM is killed
// after the stop timeout.
func TestDrainDeregistersThenTermThenKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rel := e.release(t, "stubborn", func(r *state.Release) { r.Env["IGNORE_SIGTERM"] = "1" })
	inst := instances(rel, 1)
	cfg := e.config(t)
	cfg.StopTimeout = 2 * time.Second
	e.run(t, cfg, nil)
	e.assign(t, inst)
	testenv.Eventually(t, 60*time.Second, "a passing instance", func() bool { return e.allPassing(inst, "stubborn") })
	seen := e.containerEvents(t)

	e.assign(t)
	// The last moment the instance was seen registered: it left Consul after that.
	var lastRegistered time.Time
	testenv.Eventually(t, 10*time.Second, "the instance to leave Consul", func() bool {
		for range 5 { // look every 20ms
			at := time.Now()
			svcs, err := e.consul.Client.Agent().Services()
			if err == nil && svcs[state.RegistrationID(e.hostID, inst[0].ID)] == nil {
				return true
			}
			lastRegistered = at
			time.Sleep(20 * time.Millisecond)
		}
		return false
	})
	testenv.Eventually(t, 20*time.Second, "the container to be removed", func() bool { return len(e.containers(t)) == 0 })

	var term, kill time.Time
	for _, m := range seen() {
		at := time.Unix(0, m.TimeNano)
		switch {
		case m.Action == events.ActionKill && m.Actor.Attributes["signal"] == "15":
			term = at
		case m.Action == events.ActionKill && m.Actor.Attributes["signal"] == "9":
			kill = at
		}
	}
	if term.IsZero() || kill.IsZero() {
		t.Fatalf("no SIGTERM then SIGKILL: %v", seen())
	}
	if !term.After(lastRegistered) {
		t.Errorf("SIGTERM at %v while the instance was still in Consul (seen at %v)", term, lastRegistered)
	}
	if d := kill.Sub(term); d < cfg.StopTimeout {
		t.Errorf("SIGKILL %v after SIGTERM, want at least the stop timeout %v", d, cfg.StopTimeout)
	}
}

// A container without our labels, and one labelled for another host, are never touched; a
// container with our labels that no assignment names (an orphan) is removed, but only once
// it has been one for the grace period.
func TestOrphansAndStrangers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	run := func(labels map[string]string) string {
		t.Helper()
		l := map[string]string{testenv.TestLabel: e.docker.Label[testenv.TestLabel]}
		for k, v := range labels {
			l[k] = v
		}
		c, err := e.docker.Client.ContainerCreate(ctx, &container.Config{Image: e.docker.TestImage(t), Labels: l}, nil, nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.docker.Client.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	stranger := run(nil)
	neighbour := run(map[string]string{hostd.LabelHost: e.hostID + "-other", hostd.LabelInstance: "demo-web-00000000-0"})
	orphan := run(map[string]string{hostd.LabelHost: e.hostID, hostd.LabelInstance: "demo-web-00000000-1"})
	startedAt := map[string]string{}
	for _, id := range []string{stranger, neighbour} {
		info, _ := e.docker.Client.ContainerInspect(ctx, id)
		startedAt[id] = info.State.StartedAt
	}

	rel := e.release(t, "owner", nil)
	inst := instances(rel, 1)
	e.assign(t, inst)
	cfg := e.config(t)
	begin := time.Now()
	e.run(t, cfg, nil)
	testenv.Eventually(t, 10*time.Second, "the orphan in the status", func() bool {
		st := e.status(t)
		return st != nil && slices.Contains(st.Strays, orphan[:12])
	})
	testenv.Eventually(t, 30*time.Second, "the orphan removed", func() bool {
		_, err := e.docker.Client.ContainerInspect(ctx, orphan)
		return err != nil
	})
	if took := time.Since(begin); took < cfg.OrphanGrace {
		t.Errorf("the orphan went %v after the daemon started, before the grace period (%v)", took, cfg.OrphanGrace)
	}
	testenv.Eventually(t, 30*time.Second, "the assigned instance passing", func() bool { return e.allPassing(inst, "owner") })
	for _, id := range []string{stranger, neighbour} {
		info, err := e.docker.Client.ContainerInspect(ctx, id)
		if err != nil || !info.State.Running || info.State.StartedAt != startedAt[id] {
			t.Errorf("container %s was touched: %v %+v", id[:12], err, info.State)
		}
	}
}
