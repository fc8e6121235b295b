package sync_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// A formation that cannot be placed holds up no other: the healthy formation beside it is
// placed, and the report of what could not be placed stays small whatever its count.
func TestUnplaceableFormationHoldsUpNoOther(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("iso-h%d", i)
		if err := consul.Client.Agent().ServiceRegister(state.HostRegistration(state.Host{ID: id, Address: "127.0.0.1",
			Capacity: state.Resources{CPU: 4000, Memory: 8 << 30}}, time.Hour, time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := consul.Client.Agent().PassTTL(state.HostCheckID(id), ""); err != nil {
			t.Fatal(err)
		}
		trustHost(t, state.NewStore(consul.Client, ""), id)
	}
	image := randomImage(t, reg)
	big, small := git.NewRepo(t, "big"), git.NewRepo(t, "small")
	big.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: big\nservices:\n  web:\n    image: %s\n    scale: 450\n    resources: {memory: 64Gi}\n", image)}, "too big")
	small.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: small\nservices:\n  web:\n    image: %s\n    scale: 3\n    resources: {memory: 64Mi}\n", image)}, "fits")
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: big.URL}, {URL: small.URL}}, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	assigned, _, err := store.Assignments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	placed := map[string]int{}
	for _, a := range assigned {
		for _, i := range a.Instances {
			placed[i.Formation]++
		}
	}
	if placed["small"] != 3 || placed["big"] != 0 {
		t.Fatalf("placed %v: want small's 3 and none of big's", placed)
	}
	report, err := store.PlacementReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(report.Unplaced); n == 0 || n > 110 {
		t.Fatalf("the report lists %d entries for 450 unplaced instances", n)
	}
}
