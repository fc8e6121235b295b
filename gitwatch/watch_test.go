package gitwatch_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

func poll(t *testing.T, w *gitwatch.Watcher) []gitwatch.Event {
	t.Helper()
	events, err := w.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func TestPollEvents(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	first := r.Commit(map[string]string{"a": "1"}, "first")

	repo, err := gitwatch.Open(r.URL, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := gitwatch.NewWatcher(repo, []string{"main", "release"}, nil)

	events := poll(t, w)
	if len(events) != 1 || events[0].Kind != gitwatch.KindPush || events[0].New != first || events[0].Old != "" {
		t.Fatalf("first poll: %+v", events)
	}

	// Nothing moved: a listing, no fetch.
	fetches := s.Count("app", testenv.GitFetch)
	if events := poll(t, w); len(events) != 0 {
		t.Fatalf("poll with no change: %+v", events)
	}
	if n := s.Count("app", testenv.GitFetch); n != fetches {
		t.Fatalf("a poll with no change fetched (%d -> %d)", fetches, n)
	}

	second := r.Commit(map[string]string{"a": "2"}, "second")
	events = poll(t, w)
	if len(events) != 1 || events[0].Kind != gitwatch.KindPush || events[0].Old != first || events[0].New != second {
		t.Fatalf("push: %+v", events)
	}

	// A force-push back to the first commit, then a rewrite on top of it.
	r.ResetHard(first)
	rewritten := r.CommitOn("main", map[string]string{"b": "x"}, "rewrite")
	r.PushRef("refs/heads/main", rewritten)
	events = poll(t, w)
	if len(events) != 1 || events[0].Kind != gitwatch.KindForcePush || events[0].New != rewritten {
		t.Fatalf("force-push: %+v", events)
	}

	r.PushRef("refs/heads/release", first)
	events = poll(t, w)
	if len(events) != 1 || events[0].Ref != "refs/heads/release" || events[0].Kind != gitwatch.KindPush {
		t.Fatalf("new branch: %+v", events)
	}
	r.DeleteRef("refs/heads/release")
	events = poll(t, w)
	if len(events) != 1 || events[0].Kind != gitwatch.KindDelete || events[0].New != "" {
		t.Fatalf("delete: %+v", events)
	}

	// A new watcher on the same cache does not report what was already fetched.
	w2 := gitwatch.NewWatcher(repo, []string{"main"}, nil)
	if events := poll(t, w2); len(events) != 0 {
		t.Fatalf("restart reported %+v", events)
	}
}

func TestTreeHashAndExport(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "mono")
	c1 := r.Commit(map[string]string{"api/main.go": "package main\n", "web/index.html": "<h1>1</h1>\n", "gilliam.yml": "x: 1\n"}, "init")
	c2 := r.Commit(map[string]string{"web/index.html": "<h1>2</h1>\n", "gilliam.yml": "x: 2\n"}, "web only")

	repo, err := gitwatch.Open(r.URL, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Fetch(context.Background(), "refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	hash := func(commit, path string) string {
		h, err := repo.TreeHash(commit, path)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if hash(c1, "api") != hash(c2, "api") {
		t.Error("api changed although no file under it did")
	}
	if hash(c1, "web") == hash(c2, "web") {
		t.Error("web did not change although index.html did")
	}
	if hash(c1, ".") == hash(c2, ".") {
		t.Error("the root did not change")
	}
	if _, err := repo.TreeHash(c2, "nope"); err == nil {
		t.Error("a missing folder has a tree hash")
	}

	b, err := repo.ReadFile(c2, "gilliam.yml")
	if err != nil || string(b) != "x: 2\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	dir := t.TempDir()
	if err := repo.Export(c2, "web", dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil || string(got) != "<h1>2</h1>\n" {
		t.Fatalf("exported: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err == nil {
		t.Fatal("export of web holds a file of api")
	}
}

func TestSanitize(t *testing.T) {
	got := gitwatch.Sanitize("https://user:token@git.example.com/org/repo.git")
	if got != "https://git.example.com/org/repo.git" {
		t.Fatal(got)
	}
}
