package gitwatch

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// pollTimeout bounds one poll, fetch included, so that a server that stops answering
// cannot hold a watcher forever.
const pollTimeout = 10 * time.Minute

// jitter spreads polls by ±20% of the interval, so that many repositories polled at the
// same interval do not all hit their server at the same moment.
const jitter = 0.2

// Run polls until ctx ends, sending events to out: every poll interval (jittered), and at
// once when Trigger is called (a webhook arrived). Failures are retried with capped
// exponential backoff: from a quarter of the interval, doubling, up to 16 intervals (30
// minutes at most); stalled failures (see StalledError) wait the cap at once. A failing
// repository is logged when it starts failing and when it recovers, not at every attempt,
// and it never produces events. Run waits for out to take each event: drain it.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) {
	b := w.backoff()
	failing := false
	for {
		pollCtx, cancel := context.WithTimeout(ctx, pollTimeout)
		events, err := w.Poll(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.metrics.PollRound(err)
		wait := w.jittered()
		switch {
		case err != nil:
			if !failing {
				w.log.Warn("polling failing", "err", err, "stalled", Stalled(err))
				failing = true
			}
			wait = retryWait(b, err)
		case failing:
			w.log.Info("polling recovered")
			failing = false
			b.Reset()
		}
		for _, e := range events {
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
		// While failing, a webhook does not cut the backoff short: the poll it asks for
		// happens when the backoff ends.
		trigger := w.trigger
		if failing {
			trigger = nil
		}
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-trigger:
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// Trigger asks Run for a poll now. It never blocks, and calls that arrive while a poll is
// pending or running coalesce into one more poll.
func (w *Watcher) Trigger() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Triggered receives when Trigger was called, for callers that drive Poll themselves
// instead of Run.
func (w *Watcher) Triggered() <-chan struct{} { return w.trigger }

func (w *Watcher) jittered() time.Duration {
	i := float64(w.cfg.PollInterval)
	return time.Duration(i * (1 - jitter + 2*jitter*rand.Float64()))
}

// retryWait is how long to wait after a failed poll: the next backoff step, never above its
// cap (the randomization would go up to half over it), and the cap at once when stalled.
func retryWait(b *backoff.ExponentialBackOff, err error) time.Duration {
	if Stalled(err) {
		return b.MaxInterval
	}
	return min(b.NextBackOff(), b.MaxInterval)
}

func (w *Watcher) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = w.cfg.PollInterval / 4
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxInterval = min(16*w.cfg.PollInterval, 30*time.Minute)
	b.MaxElapsedTime = 0 // never give up: a repository may come back
	b.Reset()
	return b
}

// hint records what a webhook said happened to pull request n, for the next poll to
// confirm against the listing. A hint older than the newest taken for n (by the pull
// request's updated_at) is a replay and is dropped, as is one that cannot be ordered.
func (w *Watcher) hint(n int, h hint) {
	if w.spec.forge == "" || n <= 0 || h.at.IsZero() || h.head == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if h.at.Before(w.hintAt[n]) {
		w.log.Debug("webhook about a pull request older than the last one: dropped", "pr", n)
		return
	}
	w.hints[n], w.hintAt[n] = h, h.at
}

// origin records where pull request n's head comes from, from a signed webhook. A known
// origin is not forgotten for an unknown one (a hook whose payload lacks it).
func (w *Watcher) origin(n int, o Origin) {
	if w.spec.forge == "" || n <= 0 || o == OriginUnknown {
		return
	}
	w.mu.Lock()
	w.origins[n] = o
	w.mu.Unlock()
}
