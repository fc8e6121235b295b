package sync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// A formation belongs to the first repository that deploys it: another one naming it is
// refused (its releases are not written, it gets none of the owner's config vars, the
// owner's status is untouched) until the name is transferred.
func TestFormationBelongsToOneRepository(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()
	image := randomImage(t, reg)
	owner, stranger := git.NewRepo(t, "owner"), git.NewRepo(t, "stranger")
	owner.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: shop\nservices:\n  web:\n    image: %s\n    scale: 0\n    env: {FROM: owner}\n", image)}, "owner")
	stranger.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: shop\nservices:\n  web:\n    image: %s\n    scale: 0\n    env: {FROM: stranger}\n", image)}, "stranger")
	setConfig(t, store, "shop", "SECRET", "owner's secret")

	first, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: owner.URL}}, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	both, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: owner.URL}, {URL: stranger.URL}}, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := both.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	rels, err := store.Releases(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		if r.Env["FROM"] != "owner" {
			t.Fatalf("a release from the stranger was written: %+v", r.Env)
		}
	}
	if st, _ := store.FormationStatus(ctx, "shop"); st == nil || st.Error != "" || !strings.Contains(st.Repo, "owner") {
		t.Fatalf("the owner's status was touched: %+v", st)
	}
	obs, err := store.Observed(ctx, gitwatch.CacheName(stranger.URL))
	if err != nil {
		t.Fatal(err)
	}
	refused := obs.Targets["refs/heads/main gilliam.yml"].Error
	if !strings.Contains(refused, "formation shop belongs to") || !strings.Contains(refused, "gilliam-sync formations transfer shop") {
		t.Fatalf("the stranger's refusal: %q", refused)
	}

	// Transferred, the name deploys from the other repository.
	if err := store.PutClaim(ctx, &state.Claim{Formation: "shop", Repo: gitwatch.CacheName(stranger.URL), URL: stranger.URL, File: "gilliam.yml"}); err != nil {
		t.Fatal(err)
	}
	if err := both.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	d, _, err := store.Desired(ctx, "shop")
	if err != nil || d == nil {
		t.Fatal(err)
	}
	rel, err := store.Release(ctx, "shop", d.Services["web"].Latest)
	if err != nil || rel == nil || rel.Env["FROM"] != "stranger" {
		t.Fatalf("after the transfer the latest release is %+v (%v)", rel, err)
	}
}
