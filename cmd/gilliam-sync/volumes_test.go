package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// gilliam-sync volumes lists a formation's volume slots with host, size and use; move
// rewrites a slot's host; rm is refused while the slot is in use, and otherwise puts the
// volumes in the host's assignment and drops the slot's record.
func TestVolumesCommands(t *testing.T) {
	c := testenv.NewConsul(t)
	ctx := context.Background()
	store := state.NewStore(c.Client, "")
	for _, h := range []string{"h1", "h2"} {
		if err := c.Client.Agent().ServiceRegister(store.HostRegistration(state.Host{ID: h, Address: "127.0.0.1"}, time.Hour, time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	slot := func(svc string, i int, host string) state.VolumeSlot {
		return state.VolumeSlot{Service: svc, Index: i, Host: host, Paths: []state.Volume{{Path: "/data", Size: 1 << 30}}, Created: time.Now()}
	}
	b := store.NewBatch()
	b.PutVolumes(&state.FormationVolumes{Formation: "shop", Slots: map[string]state.VolumeSlot{"db/0": slot("db", 0, "h1"), "db/1": slot("db", 1, "h1")}}, 0)
	b.PutDesired(&state.Desired{Formation: "shop", Services: map[string]state.DesiredService{
		"db": {Deployments: []state.Deployment{{Release: "0123456789abcdef0123", Scale: 1}}}}}, 0)
	if err := store.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	used := state.VolumeName("h1", "shop", "db", 0, "/data")
	if err := store.PutHostStatus(ctx, &state.HostStatus{Host: "h1", Updated: time.Now(), Volumes: []state.VolumeStatus{
		{Name: used, Formation: "shop", Service: "db", Index: 0, Path: "/data", Bytes: 3 << 20},
		{Name: state.VolumeName("h1", "shop", "db", 1, "/data"), Formation: "shop", Service: "db", Index: 1, Path: "/data", Bytes: 0}}}); err != nil {
		t.Fatal(err)
	}
	cmd := func(want int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := run(ctx, append([]string{"volumes", "--consul", c.Addr}, args...), &out, &errOut); code != want {
			t.Fatalf("volumes %v: exit %d, want %d\n%s%s", args, code, want, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}

	list := cmd(0, "shop")
	if !strings.Contains(list, "db/0  h1    /data  1.0Gi  3.0Mi  "+used) {
		t.Fatalf("list:\n%s", list)
	}
	if out := cmd(1, "rm", "shop", "db/0"); !strings.Contains(out, "in use") {
		t.Fatalf("rm of a slot in use: %s", out)
	}
	cmd(2, "move", "shop", "db/1")
	if out := cmd(1, "move", "shop", "db/1", "--to", "nowhere"); !strings.Contains(out, "no host") {
		t.Fatalf("move to an unknown host: %s", out)
	}
	if out := cmd(0, "move", "shop", "db/1", "--to", "h2"); !strings.Contains(out, "data is not copied") {
		t.Fatalf("move: %s", out)
	}
	v, _, err := store.Volumes(ctx, "shop")
	if err != nil || v.Slots["db/1"].Host != "h2" {
		t.Fatalf("after move: %+v %v", v, err)
	}
	if list := cmd(0, "shop"); !strings.Contains(list, "h1 (left by a move)") {
		t.Fatalf("list after the move:\n%s", list)
	}
	// The volume the move left on h1: removed by naming its host.
	cmd(0, "rm", "shop", "db/1", "--host", "h1")
	as, _, err := store.Assignments(ctx)
	if err != nil || as["h1"] == nil || !slices.Contains(as["h1"].RemoveVolumes, state.VolumeName("h1", "shop", "db", 1, "/data")) {
		t.Fatalf("h1's assignment: %+v %v", as["h1"], err)
	}
	if v, _, _ := store.Volumes(ctx, "shop"); v.Slots["db/1"].Host != "h2" {
		t.Fatal("removing the old host's volume dropped the slot's record")
	}
}
