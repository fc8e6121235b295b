package hostd

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// step is one answer of a scripted Consul to a blocking query.
type step struct {
	a     *state.Assignment
	index uint64
	err   error
}

// script plays answers in order, recording the index each query sent and when, then
// blocks like a blocking query with nothing new.
type script struct {
	steps []step
	sent  []uint64
	at    []time.Time
	done  chan struct{}
}

func (s *script) fetch(ctx context.Context, index uint64) (*state.Assignment, uint64, error) {
	s.sent = append(s.sent, index)
	s.at = append(s.at, time.Now())
	if len(s.sent) > len(s.steps) {
		close(s.done)
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	st := s.steps[len(s.sent)-1]
	return st.a, st.index, st.err
}

func (s *script) run(t *testing.T, w *watcher) []*state.Assignment {
	t.Helper()
	s.done = make(chan struct{})
	w.fetch = s.fetch
	w.log = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	var got []*state.Assignment
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		w.run(ctx, func(a *state.Assignment) { got = append(got, a) }, func(error) {})
	}()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not play the script")
	}
	cancel()
	<-finished
	return got
}

func assignment(ids ...string) *state.Assignment {
	a := &state.Assignment{Host: "h", Instances: []state.Instance{}, Updated: t0}
	for _, id := range ids {
		a.Instances = append(a.Instances, state.Instance{ID: id})
	}
	return a
}

func TestWatchFollowsIndexes(t *testing.T) {
	a1, a2, a3, a4 := assignment("a"), assignment("a", "b"), assignment("c"), assignment("d")
	rewritten := assignment("a") // the same content written again: a new index
	rewritten.Updated = t0.Add(time.Minute)
	s := &script{steps: []step{
		{a: a1, index: 10},                      // first answer: delivered
		{a: a1, index: 10},                      // the wait ran out: nothing new
		{a: rewritten, index: 12},               // same content under a new index: dropped
		{a: a2, index: 15},                      // news
		{a: a2, index: 5},                       // the index went backwards: start over
		{a: a3, index: 6},                       // news, from index 0
		{err: errors.New("connection refused")}, // Consul away
		{a: a3, index: 7},                       // back, nothing new: dropped
		{a: a4, index: 0},                       // a zero index is taken as 1: below 7, start over
		{a: a4, index: 0},                       // from 0, it is news
	}}
	got := s.run(t, &watcher{minDelay: time.Millisecond, retry: Backoff{Min: time.Millisecond, Max: time.Millisecond}})
	if want := []*state.Assignment{a1, a2, a3, a4}; !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	if want := []uint64{0, 10, 10, 12, 15, 0, 6, 0, 7, 0, 1}; !slices.Equal(s.sent, want) {
		t.Errorf("indexes sent %v, want %v", s.sent, want)
	}
}

func TestWatchPacesItsCalls(t *testing.T) {
	const minDelay = 50 * time.Millisecond
	var steps []step
	for i := range 6 {
		steps = append(steps, step{a: assignment(string(rune('a' + i))), index: uint64(10 + i)})
	}
	s := &script{steps: steps}
	s.run(t, &watcher{minDelay: minDelay, retry: Backoff{Min: time.Millisecond, Max: time.Millisecond}})
	// The first answer is acted on at once; after that, calls are minDelay apart at least.
	for i := 2; i < len(s.at); i++ {
		if gap := s.at[i].Sub(s.at[i-1]); gap < minDelay {
			t.Errorf("calls %d and %d %v apart, want at least %v", i-1, i, gap, minDelay)
		}
	}
}

func TestWatchBacksOffOnErrors(t *testing.T) {
	retry := Backoff{Min: 20 * time.Millisecond, Max: 80 * time.Millisecond}
	var steps []step
	for range 5 {
		steps = append(steps, step{err: errors.New("connection refused")})
	}
	steps = append(steps, step{a: assignment("a"), index: 3})
	s := &script{steps: steps}
	// The waits the watch chooses are checked exactly; the time between fetches only from
	// below, since a loaded machine (make test on 2 cores) stretches any sleep.
	var chose []time.Duration
	pause := func(ctx context.Context, d time.Duration) { chose = append(chose, d); sleep(ctx, d) }
	got := s.run(t, &watcher{minDelay: time.Millisecond, retry: retry, pause: pause})
	if len(got) != 1 {
		t.Fatalf("delivered %d, want 1", len(got))
	}
	if len(chose) != 5 {
		t.Fatalf("waited %d times, want once after each of the 5 errors: %v", len(chose), chose)
	}
	for i := 1; i < 6; i++ {
		want := retry.Delay(i)
		if d := chose[i-1]; d < want || d > want+want/4 {
			t.Errorf("retry %d: chose to wait %v, want %v plus up to a quarter of jitter", i, d, want)
		}
		if gap := s.at[i].Sub(s.at[i-1]); gap < want {
			t.Errorf("retry %d after %v, before its backoff of %v", i, gap, want)
		}
	}
}

// While the watch waits out a long backoff, a probe that says Consul answers again cuts
// the wait short: the next query goes within a probe interval.
func TestWatchRetriesWhenProbeSaysConsulIsBack(t *testing.T) {
	retry := Backoff{Min: time.Hour, Max: time.Hour}
	s := &script{steps: []step{{err: errors.New("no known consul servers")}, {a: assignment("a"), index: 3}}}
	var probes atomic.Int32
	probe := func(context.Context) error {
		if probes.Add(1) < 3 {
			return errors.New("still cut off")
		}
		return nil
	}
	got := s.run(t, &watcher{minDelay: time.Millisecond, retry: retry, probe: probe, probeEvery: 20 * time.Millisecond})
	if len(got) != 1 {
		t.Fatalf("delivered %d, want 1", len(got))
	}
	if n := probes.Load(); n != 3 {
		t.Errorf("probed %d times, want 3 (two failures, then back)", n)
	}
	if gap := s.at[1].Sub(s.at[0]); gap < 60*time.Millisecond || gap > 2*time.Second {
		t.Errorf("retried after %v, want about three probe intervals (60ms), not the backoff", gap)
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		prev, got, next uint64
		news            bool
	}{
		{0, 5, 5, true},
		{5, 5, 5, false},
		{5, 9, 9, true},
		{9, 3, 0, false},
		{0, 0, 1, true},
		{1, 0, 1, false},
	}
	for _, tt := range tests {
		if next, news := state.NextIndex(tt.prev, tt.got); next != tt.next || news != tt.news {
			t.Errorf("nextIndex(%d, %d) = %d, %v; want %d, %v", tt.prev, tt.got, next, news, tt.next, tt.news)
		}
	}
}

func TestMissingAssignment(t *testing.T) {
	if !missing(&state.Assignment{Host: "h"}) {
		t.Error("an absent document is not missing")
	}
	if missing(assignment()) {
		t.Error("an empty document written by the control plane is missing")
	}
	if sameAssignment(&state.Assignment{Host: "h"}, assignment()) {
		t.Error("an absent document and an empty one are the same")
	}
}
