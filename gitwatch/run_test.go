package gitwatch_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// corrupt overwrites every object file of a cache (packs, indexes, loose objects) with
// zeros, as a disk that lost them would leave them.
func corrupt(t *testing.T, cache string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(cache, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n++
		if err := os.Chmod(p, 0o644); err != nil {
			return err
		}
		return os.WriteFile(p, make([]byte, info.Size()), 0o644)
	})
	if err != nil || n == 0 {
		t.Fatalf("corrupt %s: %d files, %v", cache, n, err)
	}
}

// A cache whose objects are damaged on disk is detected and re-cloned: after a restart,
// and while running when a read fails. Events stay exactly those of the refs that moved.
func TestCorruptCacheIsRecloned(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	c1 := r.Commit(map[string]string{"a": "1", "dir/b": "1"}, "one")
	cfg := gitwatch.RepoConfig{URL: r.URL}
	data := t.TempDir()
	w := watchIn(t, cfg, data, nil)
	wantEvents(t, "first poll", poll(t, w), gitwatch.Event{Repo: r.URL, Ref: "refs/heads/main", New: c1, Kind: gitwatch.KindPush})

	t.Run("restart", func(t *testing.T) {
		c2 := r.Commit(map[string]string{"a": "2"}, "two")
		corrupt(t, w.Repo().Dir())
		log, logged := newLogs()
		w := watchIn(t, cfg, data, log)
		wantEvents(t, "poll of a corrupt cache", poll(t, w), gitwatch.Event{Repo: r.URL, Ref: "refs/heads/main", Old: c1, New: c2, Kind: gitwatch.KindPush})
		if len(logged.lines("cache corrupt, re-cloning")) != 1 {
			t.Fatalf("re-clone not logged once:\n%s", logged)
		}
		if b, err := w.Repo().ReadFile(c2, "dir/b"); err != nil || string(b) != "1" {
			t.Fatalf("read after the re-clone: %q %v", b, err)
		}
		wantEvents(t, "next poll", poll(t, w))
	})

	t.Run("running, nothing moved", func(t *testing.T) {
		log, logged := newLogs()
		w := watchIn(t, cfg, data, log)
		head := w.Head("main")
		wantEvents(t, "poll", poll(t, w))
		corrupt(t, w.Repo().Dir())
		if _, err := w.Repo().ReadFile(head, "dir/b"); err == nil {
			t.Fatal("read from a corrupt cache without error")
		}
		fetches := s.Count("app", testenv.GitFetch)
		wantEvents(t, "poll after a failed read", poll(t, w))
		if s.Count("app", testenv.GitFetch) != fetches+1 || len(logged.lines("cache corrupt, re-cloning")) != 1 {
			t.Fatalf("no re-clone (fetches %d -> %d):\n%s", fetches, s.Count("app", testenv.GitFetch), logged)
		}
		if b, err := w.Repo().ReadFile(head, "dir/b"); err != nil || string(b) != "1" {
			t.Fatalf("read after the re-clone: %q %v", b, err)
		}
	})

	t.Run("config and HEAD garbage", func(t *testing.T) {
		dir := filepath.Join(data, gitwatch.CacheName(r.URL))
		for _, f := range []string{"config", "HEAD"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("\x00garbage["), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		w := watchIn(t, cfg, data, nil)
		// A cache that does not open starts again: everything is new to it.
		wantEvents(t, "poll", poll(t, w), gitwatch.Event{Repo: r.URL, Ref: "refs/heads/main", New: r.Head(), Kind: gitwatch.KindPush})
	})
}

// Run: a repository that fails is logged once when it starts failing and once when it
// recovers, is retried meanwhile, and produces no event until a real change.
func TestRunFailingAndRecovered(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "flaky")
	c1 := r.Commit(map[string]string{"a": "1"}, "one")
	log, logged := newLogs()
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, PollInterval: 20 * time.Millisecond}, log)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan gitwatch.Event, 10)
	go w.Run(ctx, out)
	if e := <-out; e.New != c1 {
		t.Fatalf("first event %+v", e)
	}

	hidden := r.Bare + ".away"
	if err := os.Rename(r.Bare, hidden); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "polling failing", func() bool { return len(logged.lines("polling failing")) > 0 })
	lists := s.Count("flaky", testenv.GitListRefs)
	testenv.Eventually(t, 20*time.Second, "three more attempts", func() bool { return s.Count("flaky", testenv.GitListRefs) >= lists+3 })
	if n := len(logged.lines("polling failing")); n != 1 {
		t.Fatalf("polling failing logged %d times:\n%s", n, logged)
	}
	if len(out) != 0 {
		t.Fatalf("a failing repository sent %+v", <-out)
	}

	if err := os.Rename(hidden, r.Bare); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "polling recovered", func() bool { return len(logged.lines("polling recovered")) > 0 })
	if len(out) != 0 {
		t.Fatalf("recovery without a change sent %+v", <-out)
	}
	c2 := r.Commit(map[string]string{"a": "2"}, "two")
	select {
	case e := <-out:
		if e.Kind != gitwatch.KindPush || e.Old != c1 || e.New != c2 {
			t.Fatalf("after recovery: %+v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no event after recovery")
	}
	if n := len(logged.lines("polling recovered")); n != 1 {
		t.Fatalf("polling recovered logged %d times", n)
	}
}
