package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// memForge is a forge in memory, for the notifier's logic: it records what was posted and
// can fail.
type memForge struct {
	mu       sync.Mutex
	statuses []Status
	comments map[int][]Comment
	nextID   int64
	fail     error
	calls    int
}

func (f *memForge) call() error {
	f.calls++
	return f.fail
}

func (f *memForge) SetStatus(_ context.Context, s Status) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(); err != nil {
		return err
	}
	f.statuses = append(f.statuses, s)
	return nil
}

func (f *memForge) Comments(_ context.Context, pr int) ([]Comment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(); err != nil {
		return nil, err
	}
	return append([]Comment(nil), f.comments[pr]...), nil
}

func (f *memForge) CreateComment(_ context.Context, pr int, body string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(); err != nil {
		return 0, err
	}
	f.nextID++
	f.comments[pr] = append(f.comments[pr], Comment{ID: f.nextID, Body: body, Author: "bot"})
	return f.nextID, nil
}

func (f *memForge) EditComment(_ context.Context, pr int, id int64, body string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call(); err != nil {
		return err
	}
	for i, c := range f.comments[pr] {
		if c.ID == id {
			if c.Author != "bot" {
				return &APIError{Method: "PATCH", Code: 403, Msg: "not yours"}
			}
			f.comments[pr][i].Body = body
			return nil
		}
	}
	return &APIError{Method: "PATCH", Code: 404, Msg: "no such comment"}
}

func (f *memForge) Me(context.Context) (string, error)              { return "bot", nil }
func (f *memForge) OpenPullRequests(context.Context) ([]int, error) { return nil, nil }

func newMem() *memForge { return &memForge{comments: map[int][]Comment{}} }

func TestNotifierStatuses(t *testing.T) {
	f := newMem()
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n := NewNotifier(fault.Backoff{Base: time.Second, Max: time.Minute}, nil, func() time.Time { return now })
	ctx := context.Background()
	want := func(ss ...Status) { n.Want([]Want{{Repo: "r", Client: f, Statuses: ss}}); n.Flush(ctx) }

	a := Status{Commit: "aaa", Context: "gilliam/shop", State: Pending, Description: "building"}
	want(a)
	want(a) // the same again: nothing posted
	if len(f.statuses) != 1 {
		t.Fatalf("posted %v", f.statuses)
	}
	// A newer commit replaces a pending one: the older is marked superseded, on its own commit.
	b := Status{Commit: "bbb", Context: "gilliam/shop", State: Pending, Description: "building"}
	want(b)
	if len(f.statuses) != 3 || f.statuses[1].Commit != "aaa" || f.statuses[1].State != Error || f.statuses[2] != b {
		t.Fatalf("posted %v", f.statuses)
	}
	// Success on the same commit within a second of its pending: held until a second has
	// passed (Gitea orders a commit's statuses by creation second), then posted.
	b.State = Success
	want(b)
	if len(f.statuses) != 3 {
		t.Fatalf("posted within a second of the last status on the commit: %v", f.statuses)
	}
	if wait := n.Flush(ctx); wait != StatusSpacing {
		t.Fatalf("next flush in %s, want %s", wait, StatusSpacing)
	}
	now = now.Add(StatusSpacing)
	n.Flush(ctx)
	if len(f.statuses) != 4 || f.statuses[3] != b {
		t.Fatalf("posted %v", f.statuses)
	}
	// Then a newer commit: the finished one is left alone.
	c := Status{Commit: "ccc", Context: "gilliam/shop", State: Pending}
	want(c)
	if len(f.statuses) != 5 || f.statuses[4] != c {
		t.Fatalf("posted %v", f.statuses)
	}

	// The forge fails: retried after the backoff, not at every Want; reported.
	f.fail = errors.New("connection refused")
	c.State = Success
	now = now.Add(StatusSpacing)
	want(c)
	calls := f.calls
	want(c)
	n.Flush(ctx)
	if f.calls != calls {
		t.Fatalf("retried before the backoff: %d calls, then %d", calls, f.calls)
	}
	if ds := n.Deliveries(); len(ds) != 1 || ds[0].Delivered || !strings.Contains(ds[0].Error, "refused") {
		t.Fatalf("deliveries %+v", ds)
	}
	f.fail = nil
	now = now.Add(2 * time.Second)
	n.Flush(ctx)
	if last := f.statuses[len(f.statuses)-1]; last != c {
		t.Fatalf("not delivered after the backoff: %v", f.statuses)
	}
	if ds := n.Deliveries(); !ds[0].Delivered || ds[0].Error != "" {
		t.Fatalf("deliveries %+v", ds)
	}

	// A rate limit holds every delivery to that forge until it ends.
	f.fail = &RateLimitedError{Until: now.Add(time.Minute)}
	want(Status{Commit: "ddd", Context: "gilliam/shop", State: Pending})
	f.fail = nil
	calls = f.calls
	now = now.Add(30 * time.Second)
	n.Flush(ctx)
	if f.calls != calls {
		t.Fatal("posted while rate limited")
	}
	now = now.Add(31 * time.Second)
	n.Flush(ctx)
	if f.calls != calls+1 { // ddd only: ccc finished, so nothing is superseded
		t.Fatalf("after the limit: %d calls", f.calls-calls)
	}
}

// One comment per pull request and key, found by its marker among ours only, edited in
// place; a closed preview edits it and never creates one.
func TestNotifierComments(t *testing.T) {
	f := newMem()
	// Someone else's comment carrying our marker is never edited.
	f.comments[7] = []Comment{{ID: 100, Body: Marker("shop-pr-7") + "\nfake", Author: "mallory"}}
	f.nextID = 100
	n := NewNotifier(fault.Backoff{Base: time.Second, Max: time.Minute}, nil, nil)
	ctx := context.Background()
	want := func(cs ...PRComment) { n.Want([]Want{{Repo: "r", Client: f, Comments: cs}}); n.Flush(ctx) }

	want(PRComment{PR: 7, Key: "shop-pr-7", Body: "v1"}, PRComment{PR: 8, Key: "shop-pr-8", Body: "closed", Closed: true})
	if len(f.comments[7]) != 2 || f.comments[7][0].Body != Marker("shop-pr-7")+"\nfake" || f.comments[7][1].Body != Marker("shop-pr-7")+"\nv1" {
		t.Fatalf("comments on 7: %+v", f.comments[7])
	}
	if len(f.comments[8]) != 0 {
		t.Fatalf("a closed preview's comment was created: %+v", f.comments[8])
	}
	want(PRComment{PR: 7, Key: "shop-pr-7", Body: "v2"})
	if len(f.comments[7]) != 2 || f.comments[7][1].Body != Marker("shop-pr-7")+"\nv2" {
		t.Fatalf("comments on 7: %+v", f.comments[7])
	}
	// A new notifier (a new leader) finds the comment by its marker rather than adding one.
	n = NewNotifier(fault.Backoff{Base: time.Second, Max: time.Minute}, nil, nil)
	want(PRComment{PR: 7, Key: "shop-pr-7", Body: "closed", Closed: true})
	if len(f.comments[7]) != 2 || f.comments[7][1].Body != Marker("shop-pr-7")+"\nclosed" {
		t.Fatalf("comments on 7: %+v", f.comments[7])
	}
	// Deleted by someone: made again.
	f.comments[7] = f.comments[7][:1]
	want(PRComment{PR: 7, Key: "shop-pr-7", Body: "v3"})
	if len(f.comments[7]) != 2 || f.comments[7][1].Body != Marker("shop-pr-7")+"\nv3" {
		t.Fatalf("comments on 7: %+v", fmt.Sprint(f.comments[7]))
	}
}

// hangingForge never answers until released.
type hangingForge struct {
	memForge
	release chan struct{}
}

func (f *hangingForge) SetStatus(ctx context.Context, s Status) error {
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return f.memForge.SetStatus(ctx, s)
}

// A forge that hangs holds nothing up: Want returns at once while a delivery is stuck.
func TestNotifierNeverBlocks(t *testing.T) {
	f := &hangingForge{memForge: *newMem(), release: make(chan struct{})}
	n := NewNotifier(fault.Backoff{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	for i := 0; i < 100; i++ {
		start := time.Now()
		n.Want([]Want{{Repo: "r", Client: f, Statuses: []Status{{Commit: fmt.Sprint(i), Context: "gilliam/shop", State: Pending}}}})
		// The forge hangs until released: a Want that waited on it would never return. The
		// bound is loose because a loaded machine stretches any call.
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Want took %s while the forge hangs", d)
		}
	}
	close(f.release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		last := ""
		if len(f.statuses) > 0 {
			last = f.statuses[len(f.statuses)-1].Commit
		}
		f.mu.Unlock()
		if last == "99" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the latest status was not delivered: %v", f.statuses)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

// countHandler counts log records by message.
type countHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// A failing delivery is logged once when it starts failing and once when it recovers,
// whatever the number of attempts between.
func TestNotifierLogsOnce(t *testing.T) {
	f := newMem()
	f.fail = errors.New("503 Service Unavailable")
	h := &countHandler{n: map[string]int{}}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	n := NewNotifier(fault.Backoff{Base: time.Second, Max: 4 * time.Second}, slog.New(h), func() time.Time { return now })
	n.Want([]Want{{Repo: "r", Client: f, Statuses: []Status{{Commit: "a", Context: "gilliam/shop", State: Pending}}}})
	for i := 0; i < 20; i++ {
		n.Flush(context.Background())
		now = now.Add(5 * time.Second)
	}
	if f.calls < 15 {
		t.Fatalf("%d attempts in 100 s with a 4 s cap", f.calls)
	}
	f.fail = nil
	n.Flush(context.Background())
	if h.n["forge delivery failing; retrying with backoff"] != 1 || h.n["forge delivery recovered"] != 1 {
		t.Fatalf("log lines %v", h.n)
	}
}
