package hostd

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// watcher follows one host's assignment with Consul blocking queries, the way
// consul-template's watch/view.go does: the index of each answer is sent back with the
// next query; an index that goes backwards (a restored snapshot, a new cluster) starts over
// from 0; an answer with the same index (the wait ran out) or the same content is dropped;
// calls are at least minDelay apart, plus jitter, so a key that changes in a burst does not
// turn the watch into a busy loop; errors are retried with a capped, jittered backoff, and
// from index 0 (Consul may be back with lower indexes), or sooner when probe says Consul
// answers again.
type watcher struct {
	fetch    func(ctx context.Context, index uint64) (*state.Assignment, uint64, error)
	minDelay time.Duration
	retry    Backoff
	// probe, when set, is asked every probeEvery during a retry's wait whether Consul
	// answers; when it does, the watch goes again at once. A host back from a partition
	// learns that its instances moved within probeEvery, not a backoff (up to 15s) later.
	probe      func(ctx context.Context) error
	probeEvery time.Duration
	// pause, when set, replaces the sleep of a retry's wait: a test records the wait the
	// watch chose, which a loaded machine cannot stretch, rather than time it.
	pause func(ctx context.Context, d time.Duration)
	log   *slog.Logger
}

// run calls got with each new content until ctx ends, and reached after each call: nil
// when Consul answered, else the error.
func (w *watcher) run(ctx context.Context, got func(*state.Assignment), reached func(error)) {
	var (
		index    uint64
		last     *state.Assignment
		failures int
		first    = true
	)
	for ctx.Err() == nil {
		start := time.Now()
		a, next, err := w.fetch(ctx, index)
		if ctx.Err() != nil {
			return
		}
		reached(err)
		if err != nil {
			// Consul may come back as another cluster, or from a snapshot, with indexes
			// below ours: a blocking query with our index would then wait its whole time
			// while writes go unseen. Start over from 0; identical content is dropped.
			index = 0
			failures++
			if failures == 1 {
				w.log.Warn("assignment watch failing", "err", err)
			}
			w.wait(ctx, jitter(w.retry.Delay(failures)))
			continue
		}
		if failures > 0 {
			w.log.Info("assignment watch recovered", "after", failures)
			failures = 0
		}
		if !first {
			if rest := w.minDelay - time.Since(start); rest > 0 {
				sleep(ctx, rest+time.Duration(rand.Int64N(int64(w.minDelay/5)+1)))
			}
		}
		first = false

		var changed bool
		if index, changed = state.NextIndex(index, next); !changed {
			continue
		}
		if last != nil && sameAssignment(last, a) {
			continue
		}
		last = a
		got(a)
	}
}

// wait sleeps d after a failure, or less: until probe says Consul answers, asked every
// probeEvery.
func (w *watcher) wait(ctx context.Context, d time.Duration) {
	if w.probe == nil || w.probeEvery <= 0 {
		pause := w.pause
		if pause == nil {
			pause = sleep
		}
		pause(ctx, d)
		return
	}
	deadline := time.Now().Add(d)
	for ctx.Err() == nil {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		sleep(ctx, min(w.probeEvery, left))
		if time.Until(deadline) > 0 && ctx.Err() == nil && w.probe(ctx) == nil {
			return
		}
	}
}

// sameAssignment compares what a host must run, not when it was written.
func sameAssignment(a, b *state.Assignment) bool {
	// Its one-off tasks and the volumes to remove are orders too.
	if len(a.Tasks)+len(b.Tasks) > 0 && !reflect.DeepEqual(a.Tasks, b.Tasks) ||
		len(a.RemoveVolumes)+len(b.RemoveVolumes) > 0 && !reflect.DeepEqual(a.RemoveVolumes, b.RemoveVolumes) {
		return false
	}
	if len(a.Instances) == 0 && len(b.Instances) == 0 {
		return missing(a) == missing(b)
	}
	return reflect.DeepEqual(a.Instances, b.Instances)
}

// missing tells an assignment document that is not there from an empty one. The store
// returns an empty assignment for a key that does not exist; the control plane always
// writes a list (maybe empty) and a time. A document that disappears is not an order to
// stop everything: it is what a Consul that lost its data shows.
func missing(a *state.Assignment) bool {
	return a.Instances == nil && a.Updated.IsZero()
}

// jitter adds up to a quarter, so that hosts that lost Consul together do not all call
// it again at the same moment.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d/4)+1))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
