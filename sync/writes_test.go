package sync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// Consul writes per deploy grow with the hosts a change touches, not with the instances:
// one assignment document per host, in transactions, and nothing at all on a pass where
// nothing changed.
func TestWritesProportionalToHostsTouched(t *testing.T) {
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()

	ref := randomImage(t, reg)
	const hosts = 20
	for i := 0; i < hosts; i++ {
		id := fmt.Sprintf("host%02d", i)
		reg := state.HostRegistration(state.Host{ID: id, Address: "127.0.0.1", Capacity: state.Resources{CPU: 64000, Memory: 64 << 30}}, time.Hour, time.Hour)
		if err := consul.Client.Agent().ServiceRegister(reg); err != nil {
			t.Fatal(err)
		}
		if err := consul.Client.Agent().PassTTL(state.HostCheckID(id), ""); err != nil {
			t.Fatal(err)
		}
		trustHost(t, state.NewStore(consul.Client, ""), id)
	}

	// The installation's root key is published once, by the first leader: not part of a deploy.
	first, err := sync.New(sync.Config{Key: rootKey, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := first.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}

	var report []string
	for _, scale := range []int{20, 400} {
		formation := fmt.Sprintf("w%d", scale)
		repo := git.NewRepo(t, formation)
		repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf(
			"formation: %s\nservices:\n  web:\n    image: %s\n    scale: %d\n    resources: {cpu: 10m, memory: 8Mi}\n",
			formation, ref, scale)}, "init")
		s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir()}, store, nil)
		if err != nil {
			t.Fatal(err)
		}

		before := store.Writes()
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		deploy := diff(store.Writes(), before)
		assigned, _, err := store.Assignments(ctx)
		if err != nil {
			t.Fatal(err)
		}
		touched := 0
		for _, a := range assigned {
			for _, i := range a.Instances {
				if i.Formation == formation {
					touched++
					break
				}
			}
		}

		before = store.Writes()
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if idle := diff(store.Writes(), before); idle.Requests != 0 {
			t.Fatalf("a pass with nothing new wrote %+v", idle)
		}

		// Ten more instances: only the hosts that receive them are written.
		if _, err := store.UpdateDesired(ctx, formation, func(d *state.Desired) error {
			ds := d.Services["web"]
			n := scale + 10
			ds.ScaleOverride = &n
			d.Services["web"] = ds
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		before = store.Writes()
		if err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
		scaled := diff(store.Writes(), before)

		// Deploy: one release, desired (twice: latest, then deployments), status, observed,
		// claim, routes, the deploy timeline, history and one assignment per host in one
		// transaction.
		if deploy.Keys > int64(touched)+9 {
			t.Errorf("scale %d: the deploy wrote %d keys for %d hosts touched", scale, deploy.Keys, touched)
		}
		if scaled.Keys > 10+3 {
			t.Errorf("scale %d: ten more instances wrote %d keys", scale, scaled.Keys)
		}
		report = append(report, fmt.Sprintf("  %4d instances on %d hosts: deploy %d requests, %d keys (%d assignments); +10 instances: %d requests, %d keys; idle pass: 0",
			scale, touched, deploy.Requests, deploy.Keys, touched, scaled.Requests, scaled.Keys))
	}
	testenv.Report(t, "sync-kv-writes", "Consul KV writes per deploy (20 live hosts):\n"+strings.Join(report, "\n"))
}

func diff(a, b state.Writes) state.Writes {
	return state.Writes{Requests: a.Requests - b.Requests, Keys: a.Keys - b.Keys}
}
