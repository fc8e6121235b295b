package sync_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// End to end against a real Gitea: a push watched through a Gitea webhook shows pending,
// then success with the router's URL, on the pushed commit; a pull request gets its
// preview, a status and one comment with its URL, updated in place on a new push and
// marked closed when the pull request closes and the preview goes; an invalid gilliam.yml
// is a failure naming file:line; a pull request from a fork (no preview) gets nothing.
func TestGiteaStatusesAndPreviewComments(t *testing.T) {
	t.Parallel()
	start := time.Now()
	gitea := testenv.NewGitea(t)
	giteaUp := time.Since(start)
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	docker := testenv.NewDocker(t)
	store := state.NewStore(consul.Client, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	image := strings.Split(testenv.PushImage(t, docker.TestImage(t), reg.Addr+"/test/app"), "@")[0] + ":latest"
	// The daemons' lines are shown when the test fails (CI once saw the first commit's
	// success not come in 6 minutes, with no warning to say why); FORGE_TEST_DEBUG prints
	// every line as it comes.
	log := testenv.Logger(t, slog.LevelInfo, 300)
	if os.Getenv("FORGE_TEST_DEBUG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	// A router serving, its listener in the catalog: the statuses' and comment's URLs come
	// from it. It must listen: its registration's TCP check going critical for a minute
	// takes it out of the catalog (on a slow run, before the preview's status was sent).
	rt, err := router.New(router.Config{Consul: consul.Client, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRouter := context.WithCancel(context.Background())
	routed := make(chan struct{})
	go func() { defer close(routed); _ = rt.Run(rctx) }()
	srv := httptest.NewServer(rt)
	t.Cleanup(func() { srv.Close(); stopRouter(); <-routed })
	routerPort := srv.Listener.Addr().(*net.TCPAddr).Port
	deregister, err := router.Register(consul.Client, "forge-test-router", srv.Listener.Addr().String(),
		router.Listener{Scheme: "http", Domain: "localhost", Port: routerPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deregister() })

	repo := gitea.NewRepo(t, "shop")
	file := func(message string) map[string]string {
		return map[string]string{"gilliam.yml": fmt.Sprintf(`formation: shop
services:
  web:
    image: %s
    ports: [8080]
    check: {http: /healthz, interval: 1s, timeout: 1s}
    env: {MESSAGE: %q}
    rollout: {min_healthy: 1s}
previews:
  enabled: true
`, image, message)}
	}

	// A host daemon in this process.
	hostID := fmt.Sprintf("fg-%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() { docker.RemoveContainers(t, hostd.LabelHost, hostID) })
	h, err := hostd.New(hostd.Config{ID: hostID, Advertise: "127.0.0.1", DataDir: t.TempDir(), Capacity: hostd.MachineCapacity(), Logger: log}, store, docker.Client)
	if err != nil {
		t.Fatal(err)
	}
	var running stdsync.WaitGroup
	t.Cleanup(func() { cancel(); running.Wait() })
	running.Add(1)
	go func() { defer running.Done(); h.Run(ctx) }()

	// The sync daemon: the repository watched through a signed Gitea webhook (polling once a
	// minute is only the safety net), statuses and comments posted with a token.
	secrets := t.TempDir()
	write := func(name, value string) string {
		p := filepath.Join(secrets, name)
		if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c1 := repo.Commit("main", file("v1"), "v1")
	// A pull request opened and closed before the daemon starts: Gitea keeps its ref, so a
	// fresh cache lists it (and no webhook says where it comes from: forks are allowed here,
	// so that only the forge's word can keep it out); the API says it is closed, so it never
	// starts, and never takes the only preview slot (previews.max is 1 here).
	old := repo.Commit("old", file("old"), "old")
	oldPR := repo.PullRequest("old", "main", "old")
	repo.ClosePullRequest(oldPR)
	rc := gitwatch.RepoConfig{URL: repo.CloneURL, Forge: gitwatch.Gitea, PollInterval: time.Minute,
		Webhook:  &gitwatch.Webhook{SecretFile: write("hook", "hook-secret")},
		Previews: &gitwatch.Previews{PullRequests: true, Forks: true},
		Notify:   &gitwatch.Notify{TokenFile: write("token", gitea.Token)}}
	s, err := sync.New(sync.Config{Repos: []gitwatch.RepoConfig{rc}, DataDir: t.TempDir(), ID: "forge-test",
		LockTTL: 10 * time.Second, LockDelay: time.Millisecond, MaxPreviews: 1, Logger: log}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := gitwatch.Listen(gitwatch.ServerConfig{Listen: "127.0.0.1:0"}, gitwatch.NewWebhooks(s.Watchers(), log), log)
	if err != nil {
		t.Fatal(err)
	}
	running.Add(2)
	go func() { defer running.Done(); hooks.Serve(ctx) }()
	go func() { defer running.Done(); s.Run(ctx) }()
	repo.AddWebhook(fmt.Sprintf("http://%s/hooks/gitea", hooks.Addr()), "hook-secret")

	web := fmt.Sprintf("http://shop.localhost:%d/", routerPort)
	ctxName := sync.StatusContext("shop")
	// latest is the newest status of a context on a commit, and whether pending came before.
	latest := func(commit, context string) (testenv.CommitStatus, bool) {
		var newest testenv.CommitStatus
		pending := false
		for _, st := range repo.Statuses(commit) { // newest first
			if st.Context != context {
				continue
			}
			if newest.State == "" {
				newest = st
			}
			pending = pending || st.State == "pending"
		}
		return newest, pending
	}
	waitStatus := func(what, commit, context, state string) testenv.CommitStatus {
		t.Helper()
		var st testenv.CommitStatus
		testenv.Eventually(t, 120*time.Second, what, func() bool {
			st, _ = latest(commit, context)
			return st.State == state
		})
		return st
	}

	// 1. The first commit (the webhook was not there yet: the first poll finds it), then a
	// push through the webhook: pending, then success with the URL, on that commit.
	waitStatus("success on the first commit", c1, ctxName, "success")
	pushed := time.Now()
	c2 := repo.Commit("main", file("v2"), "v2")
	st := waitStatus("success on the pushed commit", c2, ctxName, "success")
	pushToSuccess := time.Since(pushed)
	if _, pending := latest(c2, ctxName); !pending || st.TargetURL != web {
		t.Fatalf("on %s: pending first %v, then %+v (want target_url %s)", c2[:12], pending, st, web)
	}
	// Gitea's own listing (newest first by creation second) shows the success first too:
	// the notifier spaces one commit's statuses by a second (forge.StatusSpacing).
	for _, c := range []string{c1, c2} {
		if listed := repo.StatusesAsListed(c); len(listed) == 0 || listed[0].State != "success" {
			t.Fatalf("Gitea lists %s's statuses as %+v: the success is not first", c[:12], listed)
		}
	}

	// 2. A pull request: its preview, its status and one comment with its URL.
	p1 := repo.Commit("feature", file("feature one"), "feature one")
	pr := repo.PullRequest("feature", "main", "feature")
	name := fmt.Sprintf("shop-pr-%d", pr)
	preview := sync.StatusContext(name)
	previewURL := fmt.Sprintf("http://%s.localhost:%d/", name, routerPort)
	opened := time.Now()
	if st := waitStatus("the preview's status", p1, preview, "success"); st.TargetURL != previewURL {
		t.Fatalf("preview status %+v, want target_url %s", st, previewURL)
	}
	comment := func() (testenv.IssueComment, int) {
		var ours testenv.IssueComment
		n := 0
		for _, c := range repo.Comments(pr) {
			if strings.HasPrefix(c.Body, forge.Marker(name)) {
				ours, n = c, n+1
			}
		}
		return ours, n
	}
	testenv.Eventually(t, 60*time.Second, "the preview's comment", func() bool {
		c, n := comment()
		return n == 1 && strings.Contains(c.Body, previewURL) && strings.Contains(c.Body, p1[:12]) && strings.Contains(c.Body, "ready")
	})
	previewReady := time.Since(opened)
	first, _ := comment()

	// 3. A push to the pull request: the same comment, updated.
	p2 := repo.Commit("feature", file("feature two"), "feature two")
	waitStatus("the preview's status on the new commit", p2, preview, "success")
	testenv.Eventually(t, 60*time.Second, "the comment updated in place", func() bool {
		c, n := comment()
		return n == 1 && c.ID == first.ID && strings.Contains(c.Body, p2[:12]) && strings.Contains(c.Body, "ready")
	})

	// 4. An invalid gilliam.yml: failure on that commit with file:line; v2 keeps running.
	bad := file("v3")
	bad["gilliam.yml"] += "colour: blue\n"
	c3 := repo.Commit("main", bad, "invalid")
	if st := waitStatus("failure on the invalid commit", c3, ctxName, "failure"); !strings.Contains(st.Description, "gilliam.yml:11:") {
		t.Fatalf("failure %+v: want gilliam.yml:10: in its description", st)
	}
	if st, _ := latest(c2, ctxName); st.State != "success" {
		t.Fatalf("the deployed commit's status changed: %+v", st)
	}

	// 5. The pull request closes: the preview goes, and the comment says so.
	repo.ClosePullRequest(pr)
	testenv.Eventually(t, 120*time.Second, "the preview gone and its comment closed", func() bool {
		c, n := comment()
		d, _, _ := store.Desired(ctx, name)
		return d == nil && n == 1 && c.ID == first.ID && strings.Contains(c.Body, "closed")
	})

	// 6. A pull request from a fork (previews.forks is on here): its preview's status goes
	// on the fork's commit, in the base repository, and its comment on the pull request.
	password, token := gitea.NewUser(t, "mallory")
	fork := repo.Fork(t, "mallory", password, token)
	f1 := fork.Commit("patch", file("from a fork"), "from a fork")
	forkPR := repo.PullRequest("mallory:patch", "main", "from a fork")
	forkName := fmt.Sprintf("shop-pr-%d", forkPR)
	if st := waitStatus("the fork's preview status", f1, sync.StatusContext(forkName), "success"); !strings.Contains(st.TargetURL, forkName+".localhost") {
		t.Fatalf("fork preview status %+v", st)
	}
	if sts := repo.Statuses(old); len(sts) != 0 {
		t.Fatalf("the pull request closed before the start got statuses: %+v", sts)
	}
	if d, _, _ := store.Desired(ctx, fmt.Sprintf("shop-pr-%d", oldPR)); d != nil {
		t.Fatal("the pull request closed before the start got a preview")
	}
	if r, err := store.ForgeReport(ctx); err != nil || len(r.Deliveries) == 0 {
		t.Fatalf("forge report %+v, %v", r, err)
	}
	testenv.Report(t, "forge-gitea", fmt.Sprintf("forge e2e against Gitea 1.26: Gitea up in %s; push to success status %s; pull request to preview comment %s; whole test %s",
		giteaUp.Round(100*time.Millisecond), pushToSuccess.Round(100*time.Millisecond), previewReady.Round(100*time.Millisecond), time.Since(start).Round(time.Second)))
}
