package state_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

func release(env string) *state.Release {
	r := &state.Release{
		Formation: "hello", Service: "web", Image: "127.0.0.1:5000/hello/web@sha256:abc",
		Env: map[string]string{"GREETING": env}, Ports: []state.Port{{Port: 8080}},
		Check:  state.Check{Type: "http", Path: "/healthz", Interval: 10 * time.Second, Timeout: 2 * time.Second},
		Commit: "c1", Created: time.Unix(100, 0), Cause: "push",
	}
	r.ID = r.ComputeID()
	return r
}

func TestReleaseIDIsContentAddressed(t *testing.T) {
	a, b := release("hi"), release("hi")
	b.Commit, b.Created, b.Cause = "c2", time.Unix(200, 0), "rollback"
	if a.ID != b.ID {
		t.Fatalf("provenance changed the id: %s != %s", a.ID, b.ID)
	}
	if c := release("hello"); c.ID == a.ID {
		t.Fatal("a change of env alone kept the id")
	}
	d := release("hi")
	d.Image = "127.0.0.1:5000/hello/web@sha256:def"
	if d.ComputeID() == a.ID {
		t.Fatal("a new image kept the id")
	}
	// Map order cannot matter: encoding/json sorts keys, and the ID is stable across runs.
	e := release("hi")
	e.Env = map[string]string{"B": "2", "A": "1", "GREETING": "hi"}
	f := release("hi")
	f.Env = map[string]string{"GREETING": "hi", "A": "1", "B": "2"}
	if e.ComputeID() != f.ComputeID() {
		t.Fatal("env order changed the id")
	}
}

func TestReleasesAreImmutable(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	ctx := context.Background()

	r := release("hi")
	if err := s.PutRelease(ctx, r); err != nil {
		t.Fatal(err)
	}
	// Writing the same release again is a no-op, even with other provenance.
	again := *r
	again.Commit, again.Cause = "c9", "rollback"
	if err := s.PutRelease(ctx, &again); err != nil {
		t.Fatal(err)
	}
	got, err := s.Release(ctx, "hello", r.ID)
	if err != nil || got == nil || got.Commit != "c1" {
		t.Fatalf("release after a second write: %+v, %v", got, err)
	}
	// A release whose content does not match its ID is refused.
	forged := *r
	forged.Env = map[string]string{"GREETING": "forged"}
	if err := s.PutRelease(ctx, &forged); err == nil {
		t.Fatal("a release whose id does not match its content was stored")
	}
	list, err := s.Releases(ctx, "hello")
	if err != nil || len(list) != 1 {
		t.Fatalf("releases: %d, %v", len(list), err)
	}
}

func TestDesiredCheckAndSet(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "test/")
	ctx := context.Background()

	d := &state.Desired{Formation: "hello", Services: map[string]state.DesiredService{"web": {Deployments: []state.Deployment{{Release: "r1", Scale: 2}}}}}
	if err := s.PutDesired(ctx, d, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDesired(ctx, d, 0); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	got, index, err := s.Desired(ctx, "hello")
	if err != nil || got == nil || index == 0 {
		t.Fatalf("read: %v %d %v", got, index, err)
	}
	got.Services["web"].Deployments[0].Scale = 3
	if err := s.PutDesired(ctx, got, index); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDesired(ctx, got, index); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale index: %v, want ErrConflict", err)
	}
	names, err := s.Formations(ctx)
	if err != nil || len(names) != 1 || names[0] != "hello" {
		t.Fatalf("formations: %v %v", names, err)
	}
}

func TestInstancesExpandDesired(t *testing.T) {
	d := &state.Desired{Formation: "f", Services: map[string]state.DesiredService{
		"web":    {Deployments: []state.Deployment{{Release: "aaaaaaaaaaaa", Scale: 2}, {Release: "bbbbbbbbbbbb", Scale: 1}}},
		"worker": {Deployments: []state.Deployment{{Release: "cccccccccccc", Scale: 0}}},
	}}
	got := d.Instances()
	want := []string{"f-web-aaaaaaaa-0", "f-web-aaaaaaaa-1", "f-web-bbbbbbbb-0"}
	if len(got) != len(want) {
		t.Fatalf("instances: %+v", got)
	}
	for i, w := range want {
		if got[i].ID != w {
			t.Errorf("instance %d: %s, want %s", i, got[i].ID, w)
		}
	}
}

// More hosts than one transaction holds: the writes are split, and a stale index anywhere
// is a conflict.
func TestWriteAssignmentsInTransactions(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	ctx := context.Background()

	var as []*state.Assignment
	for i := 0; i < 100; i++ {
		as = append(as, &state.Assignment{Host: fmt.Sprintf("h%03d", i), Instances: []state.Instance{{ID: fmt.Sprint("i", i)}}})
	}
	if err := s.WriteAssignments(ctx, as, nil); err != nil {
		t.Fatal(err)
	}
	got, indexes, err := s.Assignments(ctx)
	if err != nil || len(got) != 100 {
		t.Fatalf("assignments: %d %v", len(got), err)
	}
	// Rewrite h000 with a stale index of 0: conflict.
	err = s.WriteAssignments(ctx, []*state.Assignment{{Host: "h000"}}, map[string]uint64{"h000": 0})
	if !errors.Is(err, state.ErrConflict) {
		t.Fatalf("stale write: %v, want ErrConflict", err)
	}
	// With the current index it goes through.
	if err := s.WriteAssignments(ctx, []*state.Assignment{{Host: "h000"}}, indexes); err != nil {
		t.Fatal(err)
	}
}

func TestWaitAssignmentBlocksUntilChange(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	ctx := context.Background()

	a, index, err := s.WaitAssignment(ctx, "h1", 0, time.Second)
	if err != nil || len(a.Instances) != 0 {
		t.Fatalf("first read: %+v %v", a, err)
	}
	done := make(chan *state.Assignment)
	go func() {
		a, _, err := s.WaitAssignment(ctx, "h1", index, 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("the blocking query returned before any change")
	default:
	}
	if err := s.WriteAssignments(ctx, []*state.Assignment{{Host: "h1", Instances: []state.Instance{{ID: "x"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-done:
		if len(a.Instances) != 1 {
			t.Fatalf("woke with %+v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking query did not wake on the write")
	}
}

func TestHostsFromCatalog(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	reg := state.HostRegistration(state.Host{ID: "h1", Address: "127.0.0.1",
		Capacity: state.Resources{CPU: 2000, Memory: 1 << 30}, Labels: map[string]string{"zone": "eu"}},
		10*time.Second, time.Minute)
	if err := c.Client.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	hosts, err := s.Hosts(context.Background())
	if err != nil || len(hosts) != 1 {
		t.Fatalf("hosts: %+v %v", hosts, err)
	}
	h := hosts[0]
	if h.ID != "h1" || h.Capacity.CPU != 2000 || h.Capacity.Memory != 1<<30 || h.Labels["zone"] != "eu" || h.Passing {
		t.Fatalf("host before its first TTL pass: %+v", h)
	}
	if err := c.Client.Agent().PassTTL(state.HostCheckID("h1"), "alive"); err != nil {
		t.Fatal(err)
	}
	hosts, _ = s.Hosts(context.Background())
	if !hosts[0].Passing {
		t.Fatalf("host after a TTL pass: %+v", hosts[0])
	}
}
