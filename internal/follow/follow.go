package follow

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// ErrStale is the cause of a blocking query cancelled because it ran past its wait by
// more than the stale margin.
var ErrStale = errors.New("blocking query ran past its wait: watch stale")

// Follower runs one blocking query in a loop until its context ends.
type Follower struct {
	Name string
	// Wait is the blocking query's wait; StaleAfter the margin past it (and Consul's
	// jitter, a sixteenth) after which a call is stale, and the whole time a first call
	// (index 0, which does not block) has; MinDelay the least time between two calls.
	Wait, StaleAfter, MinDelay time.Duration
	Log                        *slog.Logger
	// Fetch makes one call with index and wait and returns the index of the answer; it
	// keeps what it read.
	Fetch func(ctx context.Context, index uint64, wait time.Duration) (uint64, error)
	// Changed is called after Fetch returned a new index.
	Changed func()
	// OnStale, OnError and OnContact, when set, count stale calls, failed calls and
	// answers.
	OnStale, OnError func()
	OnContact        func(time.Time)
}

// Run follows until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	var (
		index    uint64
		failures int
		first    = true
	)
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for ctx.Err() == nil {
		start := time.Now()
		limit := f.Wait + f.Wait/16 + f.StaleAfter
		if index == 0 && f.StaleAfter > 0 {
			// A call with no index does not block: it answers at once, or it is stale.
			// Given the whole wait, one that hangs would hold the watch for minutes.
			limit = f.StaleAfter
		}
		callCtx, cancel := context.WithTimeoutCause(ctx, limit, ErrStale)
		next, err := f.Fetch(callCtx, index, f.Wait)
		stale := errors.Is(context.Cause(callCtx), ErrStale)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			index = 0
			failures++
			if stale {
				call(f.OnStale)
				log.Warn("watch stale: restarting it", "watch", f.Name, "waited", time.Since(start).Round(time.Millisecond))
			} else {
				call(f.OnError)
				if failures == 1 {
					log.Warn("watch failing; keeping what it last saw", "watch", f.Name, "err", err)
				}
			}
			if !stale {
				Sleep(ctx, Backoff(failures))
			}
			continue
		}
		if f.OnContact != nil {
			f.OnContact(time.Now())
		}
		if failures > 0 {
			log.Info("watch recovered", "watch", f.Name, "after", failures)
			failures = 0
		}
		if !first {
			if rest := f.MinDelay - time.Since(start); rest > 0 {
				Sleep(ctx, rest)
			}
		}
		first = false
		var changed bool
		if index, changed = state.NextIndex(index, next); changed {
			f.Changed()
		}
	}
}

func call(f func()) {
	if f != nil {
		f()
	}
}

// Backoff is 100ms doubling to 5s, plus up to a quarter of jitter.
func Backoff(failures int) time.Duration {
	d := 100 * time.Millisecond << min(max(failures-1, 0), 6)
	d = min(d, 5*time.Second)
	return d + time.Duration(rand.Int64N(int64(d/4)+1))
}

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
