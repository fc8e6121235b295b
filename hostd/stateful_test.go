package hostd

import (
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// A new instance of a slot with volumes waits while the container of the slot's previous
// instance is here; other instances do not.
func TestSlotsFree(t *testing.T) {
	withVol := &state.Release{ID: "bbbbbbbbbbbbbbbbbbbb", Volumes: []state.Volume{{Path: "/data"}}}
	without := &state.Release{ID: "cccccccccccccccccccc"}
	p := &pass{now: time.Now(), notes: map[string]string{}, releases: map[string]*state.Release{withVol.ID: withVol, without.ID: without}}
	inst := func(svc, rel string, i int) state.Instance {
		return state.Instance{ID: state.InstanceID("f", svc, rel, i), Formation: "f", Service: svc, Release: rel, Index: i}
	}
	old := state.InstanceID("f", "db", "aaaaaaaaaaaaaaaaaaaa", 0)
	create := []state.Instance{inst("db", withVol.ID, 0), inst("db", withVol.ID, 1), inst("web", without.ID, 0)}
	containers := []observed{{ID: "c1", Instance: old, State: "running"}, {ID: "c2", Instance: state.InstanceID("f", "web", "aaaaaaaaaaaaaaaaaaaa", 0)}}
	got := (&Daemon{}).slotsFree(p, create, containers)
	if len(got) != 2 || got[0].ID != create[1].ID || got[1].ID != create[2].ID {
		t.Fatalf("free: %v", got)
	}
	if note := p.notes[create[0].ID]; note == "" || p.wake.IsZero() {
		t.Fatalf("the held instance: note %q, wake %v", note, p.wake)
	}
}

func TestSameAssignmentSeesTasksAndRemovals(t *testing.T) {
	a := &state.Assignment{Host: "h", Instances: []state.Instance{{ID: "i"}}}
	b := *a
	b.Tasks = []state.Task{{ID: "t"}}
	if sameAssignment(a, &b) {
		t.Fatal("a new task is not a change")
	}
	c := *a
	c.RemoveVolumes = []string{"v"}
	if sameAssignment(a, &c) {
		t.Fatal("a volume to remove is not a change")
	}
	d := *a
	d.Updated = time.Now()
	if !sameAssignment(a, &d) {
		t.Fatal("only the time changed")
	}
}
