package gitwatch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// One poll round over 100 watched repositories where nothing moved, against the real git
// server (smart HTTP through git http-backend): a listing each, no fetch. "sequential"
// polls one after the other; "concurrent" polls all at once, as the daemon's watchers do.
func BenchmarkPollRound100(b *testing.B) {
	s := testenv.NewGitServer(b)
	var watchers []*gitwatch.Watcher
	for i := range 100 {
		r := s.NewRepo(b, fmt.Sprintf("r%03d", i))
		r.Commit(map[string]string{"a": "1"}, "one")
		w := watch(b, gitwatch.RepoConfig{URL: r.URL, Branches: []string{"main"}}, nil)
		if len(poll(b, w)) != 1 {
			b.Fatal("first poll")
		}
		watchers = append(watchers, w)
	}
	fetches := func() int {
		n := 0
		for i := range 100 {
			n += s.Count(fmt.Sprintf("r%03d", i), testenv.GitFetch)
		}
		return n
	}
	check := func(b *testing.B, events []gitwatch.Event, err error) {
		if err != nil || len(events) != 0 {
			b.Fatalf("poll with no change: %s %v", fmtEvents(events), err)
		}
	}
	before := fetches()
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, w := range watchers {
				events, err := w.Poll(context.Background())
				check(b, events, err)
			}
		}
	})
	// The server's share: the same listings with a bare HTTP client, no go-git.
	b.Run("server-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range 100 {
				resp, err := http.Get(fmt.Sprintf("%s/r%03d.git/info/refs?service=git-upload-pack", s.URL, i))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	})
	b.Run("concurrent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var wg sync.WaitGroup
			for _, w := range watchers {
				wg.Go(func() {
					events, err := w.Poll(context.Background())
					check(b, events, err)
				})
			}
			wg.Wait()
		}
	})
	if n := fetches() - before; n != 0 {
		b.Fatalf("rounds with no change fetched %d times", n)
	}
}

// From a push hook's POST to the event on the watcher's channel: the receiver's work, the
// ref listing, the fetch of one new commit and the ancestry check. The push itself (git
// on the command line) is not timed.
func BenchmarkWebhookToEvent(b *testing.B) {
	h := newHookedRepo(b, gitwatch.GitHub, "latency", false)
	h.repo.Commit(map[string]string{"a": "0"}, "zero")
	out := h.run(b)
	next(b, out, "first poll")
	body := h.f.push(h.repo.URL)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		c := h.repo.Commit(map[string]string{"a": fmt.Sprint(i + 1)}, "next")
		hdr := h.f.headers(body, "push")
		b.StartTimer()
		if code := send(b, h.hooks.URL, gitwatch.GitHub, body, hdr); code != http.StatusAccepted {
			b.Fatalf("hook: %d", code)
		}
		if e := next(b, out, "after the hook"); e.New != c {
			b.Fatalf("event %+v, want %s", e, c)
		}
	}
}

// The receiver's own answer to a valid hook (read, parse, verify, queue a poll), without the
// poll: what a forge waits for.
func BenchmarkWebhookAnswer(b *testing.B) {
	h := newHookedRepo(b, gitwatch.GitHub, "answer", false)
	body := h.f.push(h.repo.URL)
	b.ReportAllocs()
	for b.Loop() {
		if code := send(b, h.hooks.URL, gitwatch.GitHub, body, h.f.headers(body, "push")); code != http.StatusAccepted {
			b.Fatalf("hook: %d", code)
		}
	}
}
