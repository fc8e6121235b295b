package sync_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// Pull requests get preview formations: created when the PR ref appears, updated with its
// commits, kept through a failing listing, torn down (instances, Consul registrations and
// keys) when the ref goes or the TTL passes, and capped in number.
func TestPreviews(t *testing.T) {
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	docker := testenv.NewDocker(t)
	gitsrv := testenv.NewGitServer(t)
	repo := gitsrv.NewRepo(t, "pv")
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()
	image := strings.Split(testenv.PushImage(t, docker.TestImage(t), reg.Addr+"/test/app"), "@")[0] + ":latest"

	// The forge sits behind a proxy that can fail, as a forge that is down would.
	target, _ := url.Parse(gitsrv.URL)
	var forgeDown atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forgeDown.Load() {
			http.Error(w, "forge down", http.StatusServiceUnavailable)
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)

	file := func(message string) map[string]string {
		return map[string]string{"gilliam.yml": fmt.Sprintf(`formation: pv
services:
  web:
    image: %s
    ports: [8080]
    check: {http: /healthz, interval: 1s, timeout: 1s}
    env: {MESSAGE: main}
previews:
  enabled: true
  ttl: 1h
  services:
    web: {env: {MESSAGE: %q}}
`, image, message)}
	}
	main := repo.Commit(file("preview of main"), "main")

	// A host daemon in this process, and the syncer with a clock the test moves.
	hostID := fmt.Sprintf("pv-%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() { docker.RemoveContainers(t, hostd.LabelHost, hostID) })
	h, err := hostd.New(hostd.Config{ID: hostID, Advertise: "127.0.0.1", DataDir: t.TempDir(), Capacity: hostd.MachineCapacity(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, store, docker.Client)
	if err != nil {
		t.Fatal(err)
	}
	hctx, stopHost := context.WithCancel(ctx)
	var hostDone stdsync.WaitGroup
	hostDone.Add(1)
	go func() { defer hostDone.Done(); h.Run(hctx) }()
	t.Cleanup(func() { stopHost(); hostDone.Wait() })

	// The clock runs, and the test can jump it forward.
	var jump atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(jump.Load())) }
	proxied := strings.Replace(repo.URL, gitsrv.URL, proxy.URL, 1)
	s, err := sync.New(sync.Config{Key: rootKey,
		Repos:   []gitwatch.RepoConfig{{URL: proxied, Forge: gitwatch.GitHub, Previews: &gitwatch.Previews{PullRequests: true, Forks: true}}},
		DataDir: t.TempDir(), MaxPreviews: 1, Now: now,
	}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	step := func() { s.SyncOnce(ctx) }
	answers := func(service, message string) bool {
		step()
		entries, _, err := consul.Client.Health().Service(service, "", true, nil)
		if err != nil || len(entries) != 1 {
			return false
		}
		return testenv.HTTPGet(fmt.Sprintf("http://%s:%d/", entries[0].Service.Address, entries[0].Service.Port)) == message
	}
	gone := func(formation string) bool {
		step()
		if keys, _, _ := consul.Client.KV().Keys("gilliam/formations/"+formation+"/", "", nil); len(keys) > 0 {
			return false
		}
		if keys, _, _ := consul.Client.KV().Keys("gilliam/releases/"+formation+"/", "", nil); len(keys) > 0 {
			return false
		}
		if svcs, _, _ := consul.Client.Catalog().Service(formation+"-web", "", nil); len(svcs) > 0 {
			return false
		}
		cs, _ := docker.Client.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", hostd.LabelFormation+"="+formation))})
		return len(cs) == 0
	}

	testenv.Eventually(t, 90*time.Second, "the main formation serving", func() bool { return answers("pv-web", "main") })

	// PR 7 opens: its preview runs, with the preview env.
	repo.CommitOn("feature", file("preview one"), "feature")
	repo.PushRef("refs/pull/7/head", repo.Head())
	testenv.Eventually(t, 90*time.Second, "the preview of PR 7 serving", func() bool { return answers("pv-pr-7-web", "preview one") })

	// A new commit on the PR updates it.
	repo.CommitOn("feature", file("preview two"), "feature 2")
	repo.PushRef("refs/pull/7/head", repo.Head())
	testenv.Eventually(t, 90*time.Second, "the preview of PR 7 updated", func() bool { return answers("pv-pr-7-web", "preview two") })

	// The forge fails: listings fail, and nothing is torn down.
	forgeDown.Store(true)
	for i := 0; i < 5; i++ {
		step()
		time.Sleep(200 * time.Millisecond)
	}
	if !answers("pv-pr-7-web", "preview two") {
		t.Fatal("the preview went away while the forge was down")
	}
	forgeDown.Store(false)

	// The cap: PR 8 gets no preview while PR 7's is alive.
	repo.PushRef("refs/pull/8/head", main)
	for i := 0; i < 3; i++ {
		step()
	}
	if d, _, _ := store.Desired(ctx, "pv-pr-8"); d != nil {
		t.Fatal("a preview beyond the cap was created")
	}

	// PR 7 closes (its ref goes): everything of its preview goes, from Docker and Consul.
	repo.DeleteRef("refs/pull/7/head")
	testenv.Eventually(t, 90*time.Second, "the preview of PR 7 gone", func() bool { return gone("pv-pr-7") })

	// PR 8 now gets its preview; with no commit for longer than its TTL, it goes too, and
	// does not come back for the same commit.
	testenv.Eventually(t, 90*time.Second, "the preview of PR 8 serving", func() bool { return answers("pv-pr-8-web", "preview of main") })
	jump.Add(int64(2 * time.Hour))
	testenv.Eventually(t, 90*time.Second, "the preview of PR 8 expired", func() bool { return gone("pv-pr-8") })
	for i := 0; i < 3; i++ {
		step()
	}
	if d, _, _ := store.Desired(ctx, "pv-pr-8"); d != nil {
		t.Fatal("an expired preview came back without a new commit")
	}
	// The main formation was never touched.
	if !answers("pv-web", "main") {
		t.Fatal("the main formation stopped serving")
	}
}
