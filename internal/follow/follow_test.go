package follow

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A first call (index 0) that hangs is stale after StaleAfter, not after the blocking
// query's wait: the watch asks again and gets its answer. (In make test, a second host
// daemon on a shared agent once got no mesh certificate for a whole minute, with nothing
// logged, which a first call that never returned would explain.)
func TestFirstCallThatHangsIsStaleAfterTheMargin(t *testing.T) {
	var calls, stale atomic.Int32
	changed := make(chan struct{}, 1)
	f := &Follower{Name: "t", Wait: time.Minute, StaleAfter: 100 * time.Millisecond,
		Fetch: func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
			if calls.Add(1) == 1 {
				<-ctx.Done() // the first call hangs
				return 0, ctx.Err()
			}
			if index == 0 {
				return 5, nil
			}
			<-ctx.Done()
			return 0, ctx.Err()
		},
		Changed: func() { changed <- struct{}{} },
		OnStale: func() { stale.Add(1) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-changed:
	case <-time.After(20 * time.Second):
		t.Fatalf("no answer after 20s: the hung first call was given the whole wait (%s)", f.Wait)
	}
	if stale.Load() != 1 {
		t.Errorf("stale calls: %d, want the one that hung", stale.Load())
	}
}
