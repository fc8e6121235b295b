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

// Old releases are deleted beyond the newest KeepReleases per service, except those in
// use: a pinned release survives however old it gets.
func TestReleaseGarbageCollection(t *testing.T) {
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	repo := testenv.NewGitServer(t).NewRepo(t, "gc")
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()
	ref := randomImage(t, reg)
	commit := func(v int) {
		repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf(
			"formation: gc\nservices:\n  web:\n    image: %s\n    scale: 0\n    env: {V: \"%d\"}\n", ref, v)}, fmt.Sprint(v))
	}
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir(), KeepReleases: 2}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := func() []string {
		rels, err := store.Releases(ctx, "gc")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rels {
			out = append(out, r.ID)
		}
		return out
	}
	var first string
	for v := 1; v <= 5; v++ {
		commit(v)
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if v == 1 {
			first = ids()[0]
		}
		time.Sleep(10 * time.Millisecond) // distinct creation times
	}
	if got := ids(); len(got) != 2 {
		t.Fatalf("after 5 releases with keep 2: %d releases", len(got))
	}

	// Pin an old release (as a rollback would); it is kept while pinned.
	pinned := ids()[1]
	if _, err := store.UpdateDesired(ctx, "gc", func(d *state.Desired) error {
		ds := d.Services["web"]
		ds.Pin = &state.Pin{Release: pinned}
		d.Services["web"] = ds
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for v := 6; v <= 8; v++ {
		commit(v)
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := ids()
	found := false
	for _, id := range got {
		found = found || id == pinned
		if id == first {
			t.Fatal("the first release survived")
		}
	}
	if !found || len(got) != 3 {
		t.Fatalf("releases %v: want the newest 2 and the pinned %s", got, pinned)
	}
}
