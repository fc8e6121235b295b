package e2e

import (
	"flag"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// parallel is t.Parallel for an e2e test that says how long it takes (expect: measured in
// make test, docs/testing.md). Go starts waiting parallel tests in no set order: in one
// measured run the three longest (80s each) started last and the machine sat idle for the
// run's last 50s while they finished. So when GILLIAM_E2E_PARALLEL is set (make test runs
// e2e with it at 6 and Go's -parallel above the number of tests), that many run at once
// and a free place goes to the longest test waiting: the longest-first rule of scheduling
// jobs on parallel machines. Without it, Go's -parallel alone decides, as before.
func parallel(t *testing.T, expect time.Duration) {
	t.Helper()
	t.Parallel()
	if order.width() == 0 {
		return
	}
	order.enter(expect)
	t.Cleanup(order.leave)
}

var order = &longestFirst{settle: 200 * time.Millisecond}

// longestFirst lets n tests run at once, the longest waiting one next. The tests Go
// releases together (all of them, once the serial ones are done) reach it within
// milliseconds of each other: it opens settle after the first one arrives, so that they
// are all in line when it picks.
type longestFirst struct {
	settle time.Duration
	once   sync.Once
	n      int

	mu            sync.Mutex
	started, open bool
	running       int
	waiting       []*waiter
}

type waiter struct {
	expect time.Duration
	start  chan struct{}
}

func (o *longestFirst) width() int {
	o.once.Do(func() {
		o.n, _ = strconv.Atoi(os.Getenv("GILLIAM_E2E_PARALLEL"))
		if f := flag.Lookup("test.parallel"); f != nil && o.n > 0 {
			// Go's own limit at or below ours leaves nothing for this one to order.
			if p, _ := strconv.Atoi(f.Value.String()); p <= o.n {
				o.n = 0
			}
		}
	})
	return o.n
}

func (o *longestFirst) enter(expect time.Duration) {
	w := &waiter{expect: expect, start: make(chan struct{})}
	o.mu.Lock()
	o.waiting = append(o.waiting, w)
	switch {
	case o.open:
		o.next()
	case !o.started:
		o.started = true
		time.AfterFunc(o.settle, func() {
			o.mu.Lock()
			o.open = true
			o.next()
			o.mu.Unlock()
		})
	}
	o.mu.Unlock()
	<-w.start
}

func (o *longestFirst) leave() {
	o.mu.Lock()
	o.running--
	o.next()
	o.mu.Unlock()
}

// next starts the longest waiting tests while there are places; o.mu is held.
func (o *longestFirst) next() {
	if !o.open {
		return
	}
	sort.SliceStable(o.waiting, func(i, j int) bool { return o.waiting[i].expect > o.waiting[j].expect })
	for o.running < o.n && len(o.waiting) > 0 {
		w := o.waiting[0]
		o.waiting = o.waiting[1:]
		o.running++
		close(w.start)
	}
}

// The order itself, without Docker: two places, five tests arriving together, the longest
// first and never more than two at once.
func TestLongestFirstOrder(t *testing.T) {
	o := &longestFirst{settle: 50 * time.Millisecond, n: 2}
	o.once.Do(func() {})
	var (
		mu        sync.Mutex
		began     []time.Duration
		now, most int
		wg        sync.WaitGroup
	)
	for _, d := range []time.Duration{1, 5, 3, 4, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.enter(d)
			mu.Lock()
			began = append(began, d)
			now++
			most = max(most, now)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			now--
			mu.Unlock()
			o.leave()
		}()
	}
	wg.Wait()
	if most > 2 {
		t.Errorf("%d ran at once, want at most 2", most)
	}
	// Two start together, then two as they end, then the last: who of a pair logs first is
	// the scheduler's.
	if len(began) != 5 || began[0]+began[1] != 9 || began[2]+began[3] != 5 || began[4] != 1 {
		t.Errorf("started in the order %v, want 5 and 4, then 3 and 2, then 1", began)
	}
}
