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

// A formation and service whose Consul service name would not be one DNS label is refused
// with the reason in the status, and nothing is deployed.
func TestServiceNameTooLongForDNS(t *testing.T) {
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	repo := testenv.NewGitServer(t).NewRepo(t, "long")
	store := state.NewStore(consul.Client, "")
	formation := strings.Repeat("f", 40)
	service := strings.Repeat("s", 30)
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: %s\nservices:\n  %s:\n    image: %s\n", formation, service, randomImage(t, reg))}, "long")
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := store.FormationStatus(context.Background(), formation)
	if err != nil || st == nil || !strings.Contains(st.Error, "over DNS's 63") {
		t.Fatalf("status: %+v %v", st, err)
	}
	if d, _, _ := store.Desired(context.Background(), formation); d != nil {
		t.Fatal("the formation was deployed")
	}
}

// A formation named after the platform's own Consul services (gilliam-host, the hosts'
// liveness) is refused: it would corrupt host discovery for every formation.
func TestPlatformNamesAreReserved(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	repo := testenv.NewGitServer(t).NewRepo(t, "reserved")
	store := state.NewStore(consul.Client, "")
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: gilliam\nservices:\n  host:\n    image: %s\n", randomImage(t, reg))}, "gilliam-host")
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := store.FormationStatus(context.Background(), "gilliam")
	if err != nil || st == nil || !strings.Contains(st.Error, "the platform's own") {
		t.Fatalf("status: %+v %v", st, err)
	}
	if d, _, _ := store.Desired(context.Background(), "gilliam"); d != nil {
		t.Fatal("the formation was deployed")
	}
}
