package sync

import (
	"context"
	"log/slog"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
)

// openPRs is what the forge's API says of a repository's pull requests: which are open.
// GitHub and Gitea keep a closed pull request's ref, so a watcher on a fresh cache lists
// every pull request ever opened; with an API to ask, only those the forge says are open
// may start a preview (and so count toward the cap). An API that fails never closes
// anything: until it has answered once, pull requests are taken as listed (the webhook's
// word on a close still counts, in gitwatch).
type openPRs struct {
	client forge.Client
	w      *gitwatch.Watcher
	log    *slog.Logger

	mu        stdsync.Mutex
	open      map[int]bool
	fetched   time.Time         // the last listing that succeeded
	failing   bool              // the last listing failed
	firstSeen map[int]time.Time // when this daemon first saw each pull request's ref
	kick      chan struct{}
}

func newOpenPRs(c forge.Client, w *gitwatch.Watcher, log *slog.Logger) *openPRs {
	return &openPRs{client: c, w: w, log: log, firstSeen: map[int]time.Time{}, kick: make(chan struct{}, 1)}
}

// allowed says whether pull request n may start a preview now: "" yes, else why not; wait
// says to hold it until the next listing (a ref seen after the last one).
func (o *openPRs) allowed(n int) (why string, wait bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	seen, ok := o.firstSeen[n]
	if !ok {
		o.firstSeen[n] = time.Now()
		select {
		case o.kick <- struct{}{}:
		default:
		}
		seen = o.firstSeen[n]
	}
	switch {
	case o.open[n]:
		return "", false
	case o.fetched.IsZero() && o.failing:
		return "", false // the API fails: an error never means "closed"
	case o.fetched.Before(seen) && !o.failing:
		return "", true
	case o.fetched.Before(seen):
		return "", false
	}
	return "the forge's API lists the pull request as closed", false
}

// run lists the open pull requests at start, whenever a new pull-request ref shows, and
// every 5 minutes, until ctx ends.
func (o *openPRs) run(ctx context.Context, news func()) {
	failing := false
	for {
		prs, err := o.client.OpenPullRequests(ctx)
		if ctx.Err() == nil {
			o.mu.Lock()
			o.failing = err != nil
			o.mu.Unlock()
		}
		if err != nil {
			news() // what waited on this listing goes ahead
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			o.log.Warn("listing open pull requests failing: pull requests are taken as listed in git", "repo", gitwatch.Sanitize(o.w.Config().URL), "err", err)
			failing = true
		case err == nil:
			if failing {
				o.log.Info("listing open pull requests recovered", "repo", gitwatch.Sanitize(o.w.Config().URL))
				failing = false
			}
			open := map[int]bool{}
			for _, n := range prs {
				open[n] = true
			}
			o.mu.Lock()
			o.open, o.fetched = open, time.Now()
			o.mu.Unlock()
			news()
		}
		wait := 5 * time.Minute
		if failing {
			wait = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-o.kick:
			sleep(ctx, time.Second) // refs of one poll arrive together: one listing for them
		case <-time.After(wait):
		}
	}
}
