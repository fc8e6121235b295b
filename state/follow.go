package state

import (
	"context"
	"math/rand/v2"
	"time"
)

// NextIndex is the index the next blocking query sends after one answered with got, and
// whether the answer may carry news (consul-template's discipline, watch/view.go): an
// index that goes backwards (a restored snapshot, a new cluster) starts over from 0; the
// same index means the wait ran out and nothing changed; 0 is never sent back, as Consul
// advises.
func NextIndex(prev, got uint64) (uint64, bool) {
	if got == 0 {
		got = 1
	}
	switch {
	case got < prev:
		return 0, false
	case got == prev:
		return prev, false
	}
	return got, true
}

// Follow runs a blocking query until ctx ends: fetch is called with the index of the last
// answer and returns the new one; news is called when the index moved. Calls are at least
// minDelay apart (plus jitter) so a burst of changes does not become a busy loop; errors
// are retried from index 0 with a capped, jittered backoff, and failing says when a run of
// errors starts (err set) and ends (nil): log state changes, not every failure.
func Follow(ctx context.Context, fetch func(ctx context.Context, index uint64) (uint64, error), news func(), failing func(error), minDelay time.Duration) {
	var index uint64
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		got, err := fetch(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			index = 0
			failures++
			if failures == 1 {
				failing(err)
			}
			d := min(250*time.Millisecond<<min(failures, 6), 10*time.Second)
			pause(ctx, d+time.Duration(rand.Int64N(int64(d/4)+1)))
			continue
		}
		if failures > 0 {
			failures = 0
			failing(nil)
		}
		var moved bool
		if index, moved = NextIndex(index, got); moved {
			news()
		}
		if rest := minDelay - time.Since(start); rest > 0 {
			pause(ctx, rest+time.Duration(rand.Int64N(int64(minDelay/5)+1)))
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
