package hostd_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// pullCounter is the real Docker client with its pulls recorded: when each began and
// ended, how many ran at once.
type pullCounter struct {
	hostd.Docker
	mu       sync.Mutex
	starts   map[string][]time.Time
	ends     map[string][]time.Time
	inFlight map[string]int
	most     map[string]int // the most pulls of one image at once
}

func newPullCounter(d hostd.Docker) *pullCounter {
	return &pullCounter{Docker: d, starts: map[string][]time.Time{}, ends: map[string][]time.Time{}, inFlight: map[string]int{}, most: map[string]int{}}
}

func (c *pullCounter) ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error) {
	c.mu.Lock()
	c.starts[ref] = append(c.starts[ref], time.Now())
	c.inFlight[ref]++
	c.most[ref] = max(c.most[ref], c.inFlight[ref])
	c.mu.Unlock()
	rc, err := c.Docker.ImagePull(ctx, ref, opts)
	if err != nil {
		c.done(ref)
		return nil, err
	}
	return &pullStream{ReadCloser: rc, done: func() { c.done(ref) }}, nil
}

func (c *pullCounter) done(ref string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight[ref]--
	c.ends[ref] = append(c.ends[ref], time.Now())
}

func (c *pullCounter) pulls(ref string) (starts []time.Time, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.starts[ref]...), c.most[ref]
}

// waits is the time from the end of each pull of ref to the start of the next.
func (c *pullCounter) waits(ref string) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(c.starts[ref]) && i <= len(c.ends[ref]); i++ {
		out = append(out, c.starts[ref][i].Sub(c.ends[ref][i-1]))
	}
	return out
}

type pullStream struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (s *pullStream) Close() error {
	s.once.Do(s.done)
	return s.ReadCloser.Close()
}

// An image is pulled once however many instances need it. With the registry down during
// a pull, the pull is retried with a growing backoff and the wait shows in the status of
// its instances; the instances of other images run on; when the registry returns, the
// pull succeeds and the waiting instances start.
func TestRegistryDownDuringPull(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	docker := newPullCounter(e.docker.Client)
	cfg := e.config(t)
	pol := cfg.PullBackoff
	e.run(t, cfg, docker)

	first := e.release(t, "first", nil)
	running := instances(first, 3)
	e.assign(t, running)
	testenv.Eventually(t, 60*time.Second, "3 passing instances", func() bool { return e.allPassing(running, "") })
	if starts, _ := docker.pulls(e.image); len(starts) != 1 {
		t.Fatalf("%d pulls of %s for 3 instances, want 1", len(starts), e.image)
	}
	before := e.snapshot(t)

	// The same app under another name: not in the engine, so it must be pulled.
	other := testenv.PushImage(t, e.docker.TestImage(t), e.registry.Addr+"/test/other")
	second := e.release(t, "second", func(r *state.Release) { r.Image = other })
	waiting := instances(second, 2)
	e.registry.Down()
	e.assign(t, running, waiting)

	testenv.Eventually(t, 30*time.Second, "4 failed pulls", func() bool { s, _ := docker.pulls(other); return len(s) >= 4 })
	testenv.Eventually(t, 10*time.Second, "the failed pull in the status of the waiting instances", func() bool {
		st := e.status(t)
		for _, inst := range waiting {
			s, ok := instanceStatus(st, inst.ID)
			if !ok || s.Container != "" || !strings.Contains(s.Error, "pull") {
				return false
			}
		}
		return true
	})
	// Each failed pull waits its backoff (300ms, 600ms, 1.2s, plus up to a quarter of
	// jitter) before the next one starts; the pass that starts it and the engine's own
	// pull only add to that, more on a busy machine. So each wait is at least its backoff:
	// a backoff that did not grow fails by the third.
	_, most := docker.pulls(other)
	waits := docker.waits(other)
	t.Logf("from the end of a failed pull to the start of the next: %v", waits)
	for i, w := range waits[:3] {
		if want := pol.Delay(i + 1); w < want {
			t.Errorf("pull %d started %v after pull %d failed, before its backoff (%v): %v", i+2, w, i+1, want, waits)
		}
	}
	if most != 1 {
		t.Errorf("%d pulls of one image at once", most)
	}
	for _, inst := range waiting {
		s, _ := instanceStatus(e.status(t), inst.ID)
		t.Logf("while the registry is down: %+v", s)
	}
	if !e.allPassing(running, "first") {
		t.Errorf("the instances of the first image stopped passing")
	}

	e.registry.Up()
	testenv.Eventually(t, 30*time.Second, "all 5 instances passing once the registry is back", func() bool {
		return e.allPassing(append(append([]state.Instance{}, running...), waiting...), "")
	})
	after := e.snapshot(t)
	for _, inst := range running {
		if after[inst.ID].container != before[inst.ID].container || after[inst.ID].started != before[inst.ID].started {
			t.Errorf("%s was touched: before %v, after %v", inst.ID, before[inst.ID], after[inst.ID])
		}
	}
	if _, most := docker.pulls(other); most != 1 {
		t.Errorf("%d pulls of one image at once", most)
	}
}
