package sync

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// observer follows what the leader decides from: Consul's KV prefix, the hosts and the
// instances' health, each with a blocking query (state.Follow), and the repositories'
// watchers. World assembles the latest of each into one value.
type observer struct {
	store *state.Store
	keys  *keyring
	repos []*repoState
	now   func() time.Time
	log   *slog.Logger
	news  func() // something changed: decide again

	mu           stdsync.Mutex
	kv           *state.Snapshot
	hosts        []state.Host
	health       map[string]state.InstanceCheck
	passingSince map[string]time.Time
	failingSince map[string]time.Time
	sources      map[string]*Source // commit + file ->
	changed      chan struct{}      // closed and replaced on every new answer
	impostors    map[string]bool    // host registrations ignored, and said so, by host and node
	answered     map[string]bool    // which of state, hosts and health answered since follow began
}

func newObserver(store *state.Store, keys *keyring, repos []*repoState, now func() time.Time, log *slog.Logger, news func()) *observer {
	return &observer{store: store, keys: keys, repos: repos, now: now, log: log, news: news, kv: store.EmptySnapshot(),
		health: map[string]state.InstanceCheck{}, passingSince: map[string]time.Time{}, failingSince: map[string]time.Time{},
		sources: map[string]*Source{}, changed: make(chan struct{}), answered: map[string]bool{}, impostors: map[string]bool{}}
}

// wait is how long one blocking query waits when nothing changes.
const wait = 5 * time.Minute

// follow runs the three blocking queries until ctx ends.
func (o *observer) follow(ctx context.Context) {
	o.mu.Lock()
	o.answered = map[string]bool{}
	o.mu.Unlock()
	var wg stdsync.WaitGroup
	failing := func(what string) func(error) {
		return func(err error) {
			if err != nil {
				o.log.Warn(what+" watch failing", "err", err)
			} else {
				o.log.Info(what + " watch recovered")
			}
		}
	}
	for _, f := range []struct {
		what  string
		fetch func(context.Context, uint64) (uint64, error)
	}{{"state", o.fetchKV}, {"hosts", o.fetchHosts}, {"health", o.fetchHealth}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			state.Follow(ctx, f.fetch, o.news, failing(f.what), 50*time.Millisecond)
		}()
	}
	wg.Wait()
}

// refresh reads all three once, without blocking: a single pass (SyncOnce, plan).
func (o *observer) refresh(ctx context.Context) error {
	for _, fetch := range []func(context.Context, uint64) (uint64, error){o.fetchKV, o.fetchHosts, o.fetchHealth} {
		if _, err := fetch(ctx, 0); err != nil {
			return err
		}
	}
	return nil
}

func (o *observer) fetchKV(ctx context.Context, index uint64) (uint64, error) {
	snap, err := o.store.Snapshot(ctx, index, wait)
	if err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.kv = snap
	o.answer("state")
	o.mu.Unlock()
	for _, p := range snap.Problems {
		o.log.Warn("a key in Consul could not be read; it is left out", "problem", p)
	}
	return snap.Index, nil
}

func (o *observer) fetchHosts(ctx context.Context, index uint64) (uint64, error) {
	hosts, next, err := o.store.WatchHosts(ctx, index, wait)
	if err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.hosts = hosts
	o.answer("hosts")
	o.mu.Unlock()
	return next, nil
}

func (o *observer) fetchHealth(ctx context.Context, index uint64) (uint64, error) {
	health, next, err := o.store.InstanceHealth(ctx, index, wait)
	if err != nil {
		return 0, err
	}
	o.mu.Lock()
	o.health = health
	o.answer("health")
	o.mu.Unlock()
	return next, nil
}

// answer records that one of the watches answered, and wakes the waiters. Called with
// o.mu held.
func (o *observer) answer(what string) {
	o.answered[what] = true
	close(o.changed)
	o.changed = make(chan struct{})
}

// ready waits until all three watches have answered since follow began: a decision on the
// state without the hosts would see every host gone and move every instance.
func (o *observer) ready(ctx context.Context) {
	o.waitFor(ctx, time.Duration(1<<62), func() bool {
		return o.answered["state"] && o.answered["hosts"] && o.answered["health"]
	})
}

// waitPast returns once a KV snapshot newer than index is in, or after d: a decision
// after a write then sees the write.
func (o *observer) waitPast(ctx context.Context, index uint64, d time.Duration) {
	o.waitFor(ctx, d, func() bool { return o.kv.Index > index })
}

// waitFor waits until done (called with o.mu held) holds, ctx ends or d passes.
func (o *observer) waitFor(ctx context.Context, d time.Duration, done func() bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		o.mu.Lock()
		ok, changed := done(), o.changed
		o.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-changed:
		}
	}
}

// World is the latest of everything, as one value. Health's memory (since when each
// instance passes, since when each host fails) is kept here: a new leader starts
// counting anew, which errs on the side of waiting.
func (o *observer) World() *World {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	w := &World{KV: o.kv, Hosts: o.trustedHosts(), Registrations: o.health, Now: now,
		PassingSince: map[string]time.Time{}, HostFailingSince: map[string]time.Time{}, NodeDown: map[string]bool{}}
	for _, ic := range o.health {
		if ic.Passing {
			since, ok := o.passingSince[ic.Instance]
			if !ok {
				since = now
			}
			w.PassingSince[ic.Instance] = since
		}
	}
	o.passingSince = w.PassingSince
	known := map[string]bool{}
	for _, h := range o.hosts {
		known[h.ID] = true
		if !h.Passing {
			w.HostFailingSince[h.ID] = o.since(h.ID, now)
		}
		if h.NodeDown {
			w.NodeDown[h.ID] = true
		}
	}
	for _, ic := range o.health { // a host gone from the catalog with its instances still in it
		if !known[ic.Host] {
			w.HostFailingSince[ic.Host] = o.since(ic.Host, now)
		}
	}
	for h := range w.HostFailingSince {
		if _, was := o.failingSince[h]; !was {
			o.log.Warn("host failing its liveness check", "host", h)
		}
	}
	o.failingSince = w.HostFailingSince
	w.Repos = o.repoViews(now)
	w.Config, w.ConfigErr = o.keys.open(o.kv)
	w.ReleaseIDKey = o.keys.releaseIDKey()
	return w
}

// trustedHosts are the hosts whose registration is on the Consul node their host daemon
// published with its key (hosts/<id>/key, which only that host's token may write): a
// registration made elsewhere under a host's ID, or by a host that published no key, is
// ignored and said once. Called with o.mu held.
func (o *observer) trustedHosts() []state.Host {
	out := make([]state.Host, 0, len(o.hosts))
	for _, h := range o.hosts {
		k := o.kv.HostKeys[h.ID]
		if k != nil && k.Node == h.Node {
			out = append(out, h)
			continue
		}
		why := "the host published no key"
		if k != nil {
			why = fmt.Sprintf("the host's key record names node %s", k.Node)
		}
		if id := h.ID + "@" + h.Node; !o.impostors[id] {
			o.impostors[id] = true
			o.log.Warn("host registration ignored: it is not on the host's node", "host", h.ID, "node", h.Node, "why", why)
		}
	}
	return out
}

func (o *observer) since(host string, now time.Time) time.Time {
	if t, ok := o.failingSince[host]; ok {
		return t
	}
	return now
}

// repoViews reads every repository's refs from its watcher, and the gilliam.yml of each
// target's commit (once per commit and file). Called with o.mu held.
func (o *observer) repoViews(now time.Time) []RepoView {
	used := map[string]bool{}
	views := make([]RepoView, 0, len(o.repos))
	for _, r := range o.repos {
		refs := r.w.Refs()
		v := RepoView{Key: r.key, URL: gitwatch.Sanitize(r.cfg.URL), Listed: !r.w.Polled().IsZero(), Refs: refs}
		for _, t := range targetsOf(r, refs) {
			k := t.Commit + " " + t.File
			src := o.sources[k]
			if src == nil {
				src = readSource(r.w.Repo(), t.Commit, t.File, r.cfg.Files)
				src.Detected = now
			}
			if src.Err == nil || fault.KindOf(src.Err) != fault.Retryable {
				o.sources[k], used[k] = src, true // a read that may work later is not kept
			}
			t.Source = src
			v.Targets = append(v.Targets, t)
		}
		views = append(views, v)
	}
	for k := range o.sources {
		if !used[k] {
			delete(o.sources, k)
		}
	}
	return views
}

// targetsOf lists a repository's targets: the deployed ref and, with previews, every
// pull-request or branch ref, each with each of its gilliam.yml files.
func targetsOf(r *repoState, refs map[string]string) []Target {
	var out []Target
	add := func(ref string, kind gitwatch.RefKind, pr int) {
		denied := ""
		if kind != gitwatch.RefDeployed {
			if ok, why := r.w.PreviewAllowed(ref); !ok {
				denied = why
			}
		}
		if kind == gitwatch.RefPullRequest && denied == "" && r.open != nil {
			why, wait := r.open.allowed(pr)
			if wait {
				return // the forge has not listed it yet: the next listing says
			}
			denied = why
		}
		for _, file := range r.cfg.Files {
			out = append(out, Target{Repo: r.key, RepoURL: gitwatch.Sanitize(r.cfg.URL), Ref: ref, File: file, Commit: refs[ref], Kind: kind, PR: pr, Denied: denied})
		}
	}
	if ref := deployRef(r.w, refs); ref != "" {
		add(ref, gitwatch.RefDeployed, 0)
	}
	names := make([]string, 0, len(refs))
	for ref := range refs {
		names = append(names, ref)
	}
	sort.Strings(names)
	for _, ref := range names {
		if kind, pr, ok := r.w.Classify(ref); ok && kind != gitwatch.RefDeployed {
			add(ref, kind, pr)
		}
	}
	return out
}

// deployRef is the ref whose commit is deployed among the refs that match the repository's
// branches and tags: the one whose commit is newest (by committer date), so a repository
// that deploys tags v* runs the newest tag; ties go to the first by name.
func deployRef(w *gitwatch.Watcher, refs map[string]string) string {
	names := make([]string, 0, len(refs))
	for ref := range refs {
		names = append(names, ref)
	}
	sort.Strings(names)
	var best string
	var bestTime time.Time
	for _, ref := range names {
		if kind, _, ok := w.Classify(ref); !ok || kind != gitwatch.RefDeployed {
			continue
		}
		when, err := w.Repo().CommitTime(refs[ref])
		if err != nil {
			continue
		}
		if best == "" || when.After(bestTime) {
			best, bestTime = ref, when
		}
	}
	return best
}

// readSource reads and parses a gilliam.yml at a commit, with the source hash of each
// built service's path: its tree without the repository's gilliam.yml files (configs), so
// a commit that only edits them makes new releases from the same images, with no build.
func readSource(repo *gitwatch.Repo, commit, file string, configs []string) *Source {
	data, err := repo.ReadFile(commit, file)
	if err != nil {
		return &Source{Err: err}
	}
	f, err := schema.Parse(file, data)
	if err != nil {
		return &Source{Err: stalledf("invalid %s:\n%w", file, err)}
	}
	src := &Source{Formation: f, Trees: map[string]string{}}
	for name, svc := range f.Services {
		if !svc.Built() {
			continue
		}
		tree, err := repo.SourceHash(commit, svc.Path, configs)
		if err != nil {
			return &Source{Err: stalledf("service %s: path %s: %w", name, svc.Path, err)}
		}
		src.Trees[name] = tree
	}
	return src
}

func stalledf(format string, args ...any) error { return fault.Stall(fmt.Errorf(format, args...)) }
