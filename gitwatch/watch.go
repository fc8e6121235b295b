package gitwatch

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

// Kind says how a ref moved.
type Kind string

const (
	KindPush      Kind = "push"       // new ref, or fast-forward
	KindForcePush Kind = "force-push" // the old commit is not an ancestor of the new one
	KindDelete    Kind = "delete"     // the ref is gone
)

// Event is a watched ref that moved.
type Event struct {
	Repo string // sanitized URL
	Ref  string // full name: refs/heads/main
	Old  string // "" when the ref is new to us
	New  string // "" when deleted
	Kind Kind
}

// Watcher follows refs of one repository by polling: a cheap listing of the remote refs,
// and a fetch only when a watched ref moved.
type Watcher struct {
	repo *Repo
	refs []string
	log  *slog.Logger
	// seen is the commit each ref had at the last poll; it starts from the cache, so a
	// restart does not report what was already fetched.
	seen map[string]string
}

// NewWatcher watches refs of repo (short branch names mean refs/heads/NAME).
func NewWatcher(repo *Repo, refs []string, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{repo: repo, log: log.With("repo", Sanitize(repo.URL)), seen: map[string]string{}}
	for _, ref := range refs {
		ref = FullRef(ref)
		w.refs = append(w.refs, ref)
		if c, err := repo.Resolve(ref); err == nil && c != "" {
			w.seen[ref] = c
		}
	}
	return w
}

// FullRef turns a short branch name into a full ref name.
func FullRef(ref string) string {
	if strings.HasPrefix(ref, "refs/") {
		return ref
	}
	return "refs/heads/" + ref
}

// Head is the commit a watched ref had at the last poll, "" when unknown.
func (w *Watcher) Head(ref string) string { return w.seen[FullRef(ref)] }

// Poll lists the remote refs, fetches the watched refs that moved, and returns an event
// per moved ref, in ref order. On error nothing is reported and nothing is forgotten.
func (w *Watcher) Poll(ctx context.Context) ([]Event, error) {
	remote, err := w.repo.ListRefs(ctx)
	if err != nil {
		return nil, err
	}
	var moved []string
	for _, ref := range w.refs {
		if remote[ref] != w.seen[ref] {
			moved = append(moved, ref)
		}
	}
	if len(moved) == 0 {
		return nil, nil
	}
	var fetch []string
	for _, ref := range moved {
		if remote[ref] != "" {
			fetch = append(fetch, ref)
		}
	}
	if len(fetch) > 0 {
		if err := w.repo.Fetch(ctx, fetch...); err != nil {
			return nil, err
		}
	}
	sort.Strings(moved)
	events := make([]Event, 0, len(moved))
	for _, ref := range moved {
		e := Event{Repo: Sanitize(w.repo.URL), Ref: ref, Old: w.seen[ref], New: remote[ref], Kind: KindPush}
		switch {
		case e.New == "":
			e.Kind = KindDelete
		case e.Old != "" && !w.isAncestor(e.Old, e.New):
			e.Kind = KindForcePush
		}
		w.log.Info("ref moved", "ref", ref, "kind", e.Kind, "old", short(e.Old), "new", short(e.New))
		if e.New == "" {
			delete(w.seen, ref)
		} else {
			w.seen[ref] = e.New
		}
		events = append(events, e)
	}
	return events, nil
}

// isAncestor reports whether old is an ancestor of (or equal to) new in the cache.
func (w *Watcher) isAncestor(old, new string) bool {
	o, err := w.repo.git.CommitObject(plumbing.NewHash(old))
	if err != nil {
		return false // the old commit is gone from history: a rewrite
	}
	n, err := w.repo.git.CommitObject(plumbing.NewHash(new))
	if err != nil {
		return false
	}
	ok, err := o.IsAncestor(n)
	return err == nil && ok
}

// Run polls every interval until ctx ends, sending events to out. A failing poll is logged
// when it starts failing and when it recovers, not on every attempt.
func (w *Watcher) Run(ctx context.Context, interval time.Duration, out chan<- Event) {
	failing := false
	for {
		events, err := w.Poll(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			w.log.Warn("polling failing", "err", err)
			failing = true
		case err == nil && failing:
			w.log.Info("polling recovered")
			failing = false
		}
		for _, e := range events {
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return
		}
	}
}
