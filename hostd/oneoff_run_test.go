package hostd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A one-off outlives a host daemon restart: the next daemon adopts its container, streams
// what it writes after, and records its exit; a one-off whose request went while no daemon
// ran is removed by the next.
func TestOneOffAdoptedAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rel := e.release(t, "hi", nil)
	stop := e.run(t, e.config(t), nil)

	o := &state.OneOff{ID: "run-00000000a1", Host: e.hostID, Formation: rel.Formation, Service: rel.Service, Release: rel.ID,
		Command: []string{"lines", "1", "sleep", "8s", "stderr", "after", "exit", "7"}, Attached: true, Created: time.Now().UTC()}
	if err := e.store.PutOneOff(ctx, o); err != nil {
		t.Fatal(err)
	}
	var out []string
	var last uint64
	read := func(io *state.OneOffIO) {
		for _, c := range io.Out {
			if c.N > last {
				out, last = append(out, string(c.Data)), c.N
			}
		}
	}
	testenv.Eventually(t, 60*time.Second, "its first line", func() bool {
		io, _, err := e.store.WaitOneOffIO(ctx, e.hostID, o.ID, 0, 0)
		if err != nil {
			return false
		}
		read(io)
		return len(out) > 0
	})
	stop() // the container runs on
	containers := func() []container.Summary {
		cs, err := e.docker.Client.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", hostd.LabelHost+"="+e.hostID), filters.Arg("label", hostd.LabelOneOff))})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	if cs := containers(); len(cs) != 1 || cs[0].State != "running" {
		t.Fatalf("the one-off's container after its daemon stopped: %+v", cs)
	}

	stop = e.run(t, e.config(t), nil)
	var st *state.OneOffStatus
	testenv.Eventually(t, 60*time.Second, "its exit recorded", func() bool {
		io, _, err := e.store.WaitOneOffIO(ctx, e.hostID, o.ID, 0, 0)
		if err != nil {
			return false
		}
		read(io)
		st = io.Status
		return st.Done() && last >= st.LastChunk
	})
	if st.State != state.OneOffExited || st.ExitCode != 7 {
		t.Fatalf("status after the restart: %+v", st)
	}
	if got := strings.Join(out, "|"); got != "1line 1\n|2after\n" {
		t.Fatalf("output chunks %q; want line 1 on stdout, then after on stderr", got)
	}
	testenv.Eventually(t, 30*time.Second, "its container removed", func() bool { return len(containers()) == 0 })
	if err := e.store.DeleteOneOff(ctx, e.hostID, o.ID); err != nil { // what the requester does once it read the end
		t.Fatal(err)
	}

	// A one-off stopped (its request deleted) while no daemon runs: the next removes it.
	o2 := &state.OneOff{ID: "run-00000000a2", Host: e.hostID, Formation: rel.Formation, Service: rel.Service, Release: rel.ID,
		Command: []string{"sleep", "5m"}, Created: time.Now().UTC()}
	if err := e.store.PutOneOff(ctx, o2); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "the detached one-off running", func() bool {
		st, _ := e.store.OneOffStatus(ctx, e.hostID, o2.ID)
		return st != nil && st.State == state.OneOffRunning
	})
	stop()
	if err := e.store.DeleteOneOff(ctx, e.hostID, o2.ID); err != nil {
		t.Fatal(err)
	}
	if len(containers()) != 1 {
		t.Fatal("the one-off's container went with its daemon")
	}
	e.run(t, e.config(t), nil)
	testenv.Eventually(t, 60*time.Second, "the stopped one-off's container removed", func() bool { return len(containers()) == 0 })
}
