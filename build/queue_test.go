package build

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeBuilds stands in for real builds in the queue's tests: each build blocks until the
// test releases it, and the fake records what ran, in order, and how many ran at once.
type fakeBuilds struct {
	mu      sync.Mutex
	started []string // service/key, in start order
	running map[string]int
	peak    int
	release map[string]chan struct{}
	// cancelled records builds whose context ended before they were released.
	cancelled []string
}

func newFakeBuilds() *fakeBuilds {
	return &fakeBuilds{running: map[string]int{}, release: map[string]chan struct{}{}}
}

func (f *fakeBuilds) gate(id string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.release[id] == nil {
		f.release[id] = make(chan struct{})
	}
	return f.release[id]
}

// build returns the run function for service's build key.
func (f *fakeBuilds) build(service, key string) func(context.Context) (Result, error) {
	id := service + "/" + key
	return func(ctx context.Context) (Result, error) {
		f.mu.Lock()
		f.started = append(f.started, id)
		f.running[service]++
		total := 0
		for _, n := range f.running {
			total += n
		}
		f.peak = max(f.peak, total)
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.running[service]--
			f.mu.Unlock()
		}()
		select {
		case <-f.gate(id):
			return Result{Image: id, Built: true}, nil
		case <-ctx.Done():
			f.mu.Lock()
			f.cancelled = append(f.cancelled, id)
			f.mu.Unlock()
			return Result{}, ctx.Err()
		}
	}
}

func (f *fakeBuilds) finish(id string) { close(f.gate(id)) }

func (f *fakeBuilds) startedList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.started...)
}

// waitStarted waits until n builds have started.
func (f *fakeBuilds) waitStarted(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.startedList()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("started %v, want %d builds", f.startedList(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type call struct {
	res Result
	err error
}

// submit calls q.do in a goroutine and returns where its outcome arrives; it returns once
// the request is in the queue (or done).
func submit(ctx context.Context, q *queue, f *fakeBuilds, service, key string) <-chan call {
	out := make(chan call, 1)
	go func() {
		res, err := q.do(ctx, service, key, f.build(service, key))
		out <- call{res, err}
	}()
	time.Sleep(5 * time.Millisecond) // requests arrive in order
	return out
}

func TestQueueSupersedesWaitingRequests(t *testing.T) {
	f := newFakeBuilds()
	q := newQueue(context.Background(), 4)
	ctx := context.Background()
	first := submit(ctx, q, f, "web", "c1")
	f.waitStarted(t, 1)
	var middle []<-chan call
	for _, k := range []string{"c2", "c3", "c4"} {
		middle = append(middle, submit(ctx, q, f, "web", k))
	}
	last := submit(ctx, q, f, "web", "c5")
	for i, c := range middle {
		if got := <-c; !errors.Is(got.err, ErrSuperseded) {
			t.Fatalf("request %d: %+v, want ErrSuperseded as soon as a newer one came", i+2, got)
		}
	}
	f.finish("web/c1")
	f.waitStarted(t, 2)
	f.finish("web/c5")
	if got := <-first; got.err != nil || got.res.Image != "web/c1" {
		t.Fatalf("first: %+v", got)
	}
	if got := <-last; got.err != nil || got.res.Image != "web/c5" {
		t.Fatalf("last: %+v", got)
	}
	if s := f.startedList(); len(s) != 2 || s[0] != "web/c1" || s[1] != "web/c5" {
		t.Fatalf("builds %v, want web/c1 then web/c5", s)
	}
}

func TestQueueSharesOneBuildPerKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		// whileRunning: the twin arrives while the build runs, else while it waits
		whileRunning bool
	}{{"running", true}, {"waiting", false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBuilds()
			q := newQueue(context.Background(), 1)
			ctx := context.Background()
			if !tc.whileRunning { // occupy the only slot, so the twins wait
				submit(ctx, q, f, "other", "x")
				f.waitStarted(t, 1)
			}
			a := submit(ctx, q, f, "web", "t1")
			b := submit(ctx, q, f, "web", "t1")
			if !tc.whileRunning {
				f.finish("other/x")
			}
			f.finish("web/t1")
			ra, rb := <-a, <-b
			if ra.err != nil || rb.err != nil || ra.res != rb.res {
				t.Fatalf("twins got %+v and %+v, want one shared result", ra, rb)
			}
			n := 0
			for _, s := range f.startedList() {
				if s == "web/t1" {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("web/t1 built %d times, want once", n)
			}
		})
	}
}

func TestQueueLimitsConcurrencyAndServesEachServiceInTurn(t *testing.T) {
	f := newFakeBuilds()
	q := newQueue(context.Background(), 2)
	ctx := context.Background()
	var calls []<-chan call
	for _, s := range []string{"a", "b", "c", "d"} {
		calls = append(calls, submit(ctx, q, f, s, "k1"))
	}
	f.waitStarted(t, 2)
	time.Sleep(20 * time.Millisecond)
	if n := len(f.startedList()); n != 2 {
		t.Fatalf("%d builds started with 2 slots", n)
	}
	// A second request for a service whose build runs waits for it, though slots free up.
	calls = append(calls, submit(ctx, q, f, "a", "k2"))
	for _, s := range []string{"b", "c", "d"} {
		f.finish(s + "/k1")
	}
	time.Sleep(20 * time.Millisecond)
	for _, s := range f.startedList() {
		if s == "a/k2" {
			t.Fatal("a/k2 started while a/k1 ran")
		}
	}
	f.finish("a/k1")
	f.finish("a/k2")
	for i, c := range calls {
		if got := <-c; got.err != nil {
			t.Fatalf("call %d: %v", i, got.err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.peak > 2 {
		t.Fatalf("%d builds ran at once, want at most 2", f.peak)
	}
}

// A build is cancelled when its last caller gives up; one that another caller still waits
// for goes on.
func TestQueueCancelsABuildNobodyWaitsFor(t *testing.T) {
	f := newFakeBuilds()
	q := newQueue(context.Background(), 2)
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxB, cancelB := context.WithCancel(context.Background())
	a := submit(ctxA, q, f, "web", "t1")
	b := submit(ctxB, q, f, "web", "t1")
	f.waitStarted(t, 1)

	cancelA()
	if got := <-a; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("cancelled caller: %+v", got)
	}
	time.Sleep(20 * time.Millisecond)
	f.mu.Lock()
	early := len(f.cancelled)
	f.mu.Unlock()
	if early != 0 {
		t.Fatal("the build was cancelled while a caller still waited for it")
	}
	cancelB()
	<-b
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.cancelled)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build went on with nobody waiting")
		}
		time.Sleep(time.Millisecond)
	}

	// The lane is free again: a new request builds.
	c := submit(context.Background(), q, f, "web", "t2")
	f.waitStarted(t, 2)
	f.finish("web/t2")
	if got := <-c; got.err != nil {
		t.Fatal(got.err)
	}
}

// Closing the queue's base context (Builder.Close) cancels what runs.
func TestQueueBaseCancelStopsBuilds(t *testing.T) {
	f := newFakeBuilds()
	base, stop := context.WithCancel(context.Background())
	q := newQueue(base, 1)
	c := submit(context.Background(), q, f, "web", "t1")
	f.waitStarted(t, 1)
	stop()
	if got := <-c; !errors.Is(got.err, context.Canceled) {
		t.Fatalf("after close: %+v", got)
	}
}

// wait, after the base context is cancelled (Builder.Close), returns only once every build
// has ended, also one whose callers left first (its log is written as it winds down), and
// a request after that is refused.
func TestQueueWaitOutlastsBuildsWindingDown(t *testing.T) {
	base, stop := context.WithCancel(context.Background())
	q := newQueue(base, 1)
	var ended atomic.Bool
	started := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := q.do(ctx, "web", "t1", func(ctx context.Context) (Result, error) {
			close(started)
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // stopping containers, closing the log
			ended.Store(true)
			return Result{}, ctx.Err()
		})
		res <- err
	}()
	<-started
	cancel() // the caller leaves at once, the build winds down
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller got %v", err)
	}
	stop()
	if err := q.wait(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !ended.Load() {
		t.Fatal("wait returned while a build was still winding down")
	}
	if _, err := q.do(context.Background(), "web", "t2", func(context.Context) (Result, error) {
		t.Error("a build ran after close")
		return Result{}, nil
	}); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("a request after close: %v, want an error", err)
	}
}

// A build that never ends (an engine hanging in pack's cleanup) does not hold Close for
// ever: wait gives up after its limit and says so.
func TestQueueWaitIsBounded(t *testing.T) {
	base, stop := context.WithCancel(context.Background())
	q := newQueue(base, 1)
	started, hung := make(chan struct{}), make(chan struct{})
	defer close(hung)
	go q.do(context.Background(), "web", "t1", func(ctx context.Context) (Result, error) {
		close(started)
		<-hung
		return Result{}, nil
	})
	<-started
	stop()
	err := q.wait(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "still stopping after 200ms") {
		t.Fatalf("wait on a hung build: %v", err)
	}
}
