package build

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// queue runs builds: at most a fixed number at once, one at a time per service. Each
// service has a lane holding the build running and at most one waiting: a request with
// another key replaces the waiting one (whose callers get ErrSuperseded), so after a burst
// of commits only the first and the last are built. A request whose key matches the
// running or the waiting build joins it instead of starting another.
//
// A build runs under the queue's context, not a caller's, since several callers may share
// it; it is cancelled when every caller waiting for it has gone.
type queue struct {
	base  context.Context
	slots chan struct{}

	mu    sync.Mutex
	lanes map[string]*lane
	// drains counts the goroutines running lanes' builds, so that wait can outlast them.
	drains sync.WaitGroup
}

type lane struct {
	running, waiting *job
	// draining is true while a goroutine runs the lane's builds.
	draining bool
}

// job is one build and the callers waiting for it.
type job struct {
	key     string
	run     func(context.Context) (Result, error)
	ctx     context.Context
	cancel  context.CancelFunc
	callers int

	done chan struct{}
	res  Result
	err  error
}

func newQueue(base context.Context, slots int) *queue {
	if slots < 1 {
		slots = 1
	}
	return &queue{base: base, slots: make(chan struct{}, slots), lanes: map[string]*lane{}}
}

// do runs run as the build key of service, or joins that build when it is running or
// waiting already, and returns its result. It returns ErrSuperseded when a request with
// another key replaces this one before it starts, and ctx's error when ctx ends first.
func (q *queue) do(ctx context.Context, service, key string, run func(context.Context) (Result, error)) (Result, error) {
	q.mu.Lock()
	if err := q.base.Err(); err != nil { // closed: wait has been called or soon will be
		q.mu.Unlock()
		return Result{}, fmt.Errorf("builder closed: %w", err)
	}
	l := q.lanes[service]
	if l == nil {
		l = &lane{}
		q.lanes[service] = l
	}
	var j *job
	switch {
	case l.running != nil && l.running.key == key:
		j = l.running
	case l.waiting != nil && l.waiting.key == key:
		j = l.waiting
	default:
		if l.waiting != nil {
			l.waiting.finish(Result{}, ErrSuperseded)
		}
		j = &job{key: key, run: run, done: make(chan struct{})}
		j.ctx, j.cancel = context.WithCancel(q.base)
		l.waiting = j
		if !l.draining {
			l.draining = true
			q.drains.Add(1)
			go func() {
				defer q.drains.Done()
				q.drain(service, l)
			}()
		}
	}
	j.callers++
	q.mu.Unlock()

	select {
	case <-j.done:
		return j.res, j.err
	case <-ctx.Done():
		q.leave(service, j)
		return Result{}, ctx.Err()
	}
}

// drain runs a lane's builds one after the other, each in a slot, until none waits. Taking
// the waiting build only once a slot is free means it is the newest by then.
func (q *queue) drain(service string, l *lane) {
	for {
		q.slots <- struct{}{}
		q.mu.Lock()
		j := l.waiting
		if j == nil {
			l.draining = false
			delete(q.lanes, service)
			q.mu.Unlock()
			<-q.slots
			return
		}
		l.waiting, l.running = nil, j
		q.mu.Unlock()

		res, err := j.run(j.ctx)

		q.mu.Lock()
		l.running = nil
		j.finish(res, err)
		q.mu.Unlock()
		<-q.slots
	}
}

// wait returns once every build has ended, its log closed and its containers gone, or
// with an error after limit. It is for after the base context is cancelled: then no build
// starts, and those running stop.
func (q *queue) wait(limit time.Duration) error {
	q.mu.Lock() // a do that saw the base context alive has counted its drain by now
	q.mu.Unlock()
	done := make(chan struct{})
	go func() { q.drains.Wait(); close(done) }()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		// An engine that hangs while pack stops its containers would hold a daemon's
		// shutdown for ever; what is left is the engine's to finish.
		return fmt.Errorf("builds still stopping after %s: their containers may remain on the engine", limit)
	}
}

// leave is a caller giving up on j: when it was the last one, a waiting build is dropped
// and a running one cancelled.
func (q *queue) leave(service string, j *job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j.callers--
	if j.callers > 0 {
		return
	}
	if l := q.lanes[service]; l != nil && l.waiting == j {
		l.waiting = nil
		j.finish(Result{}, context.Canceled)
		return
	}
	j.cancel()
}

// finish hands the result to j's callers; q.mu must be held, so it happens once.
func (j *job) finish(res Result, err error) {
	select {
	case <-j.done:
		return
	default:
	}
	j.res, j.err = res, err
	j.cancel()
	close(j.done)
}
