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

// pullCounter is the real Docker client with its pulls recorded: when each began, how many
// ran at once.
type pullCounter struct {
	hostd.Docker
	mu       sync.Mutex
	starts   map[string][]time.Time
	inFlight map[string]int
	most     map[string]int // the most pulls of one image at once
}

func newPullCounter(d hostd.Docker) *pullCounter {
	return &pullCounter{Docker: d, starts: map[string][]time.Time{}, inFlight: map[string]int{}, most: map[string]int{}}
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
}

func (c *pullCounter) pulls(ref string) (starts []time.Time, most int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.starts[ref]...), c.most[ref]
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
	e.run(t, e.config(t), docker)

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
	starts, most := docker.pulls(other)
	var gaps []time.Duration
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i].Sub(starts[i-1]))
	}
	t.Logf("gaps between pulls: %v", gaps)
	if gaps[0]+400*time.Millisecond > gaps[2] { // 300ms, 600ms, 1.2s plus jitter
		t.Errorf("the pull backoff does not grow: %v", gaps)
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
