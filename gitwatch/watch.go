package gitwatch

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
)

// Kind says how a ref moved.
type Kind string

const (
	KindPush      Kind = "push"       // a deployed ref is new, or moved forward
	KindForcePush Kind = "force-push" // a deployed ref moved to a commit that does not descend from the old one
	KindDelete    Kind = "delete"     // a deployed ref is gone

	KindPROpened  Kind = "pr-opened"  // a preview ref appeared (or its pull request was reopened)
	KindPRUpdated Kind = "pr-updated" // a preview ref moved, forward or not
	KindPRClosed  Kind = "pr-closed"  // a preview ref is gone, or a webhook said its pull request closed or merged
)

// Event is a watched ref that moved.
type Event struct {
	Repo string // the repository's sanitized URL
	Ref  string // full name: refs/heads/main, refs/tags/v1, refs/pull/7/head
	Old  string // the commit before; "" when the ref is new to us
	New  string // the commit now, fetched into the cache; "" when deleted or closed
	Kind Kind
	// PR is the pull (or merge) request's number for pr-* events on its ref; 0 for a
	// branch preview (Ref names the branch) and for deployed refs.
	PR int
	// Origin is where the pull request's head comes from, when a signed webhook said
	// (OriginUnknown otherwise: count it as a fork). Watcher.PreviewAllowed decides.
	Origin Origin
}

// Preview reports whether the event is about a preview rather than a deployed ref.
func (e Event) Preview() bool {
	return e.Kind == KindPROpened || e.Kind == KindPRUpdated || e.Kind == KindPRClosed
}

// Watcher follows the refs of one repository: a cheap listing of the remote refs at every
// poll, and a fetch only when a watched ref moved.
type Watcher struct {
	repo    *Repo
	cfg     RepoConfig
	spec    spec
	log     *slog.Logger
	trigger chan struct{}
	// hookFailing is set while this repository's webhooks are refused, to log the change once.
	hookFailing atomic.Bool

	poll sync.Mutex // one poll at a time; seen and closed change only under it

	mu sync.Mutex // guards what webhooks and Head touch while a poll runs
	// seen is the commit each watched ref had at the last poll. It starts from the cache,
	// so a restart does not report again what was already fetched.
	seen map[string]string
	// closed holds the refs of pull requests a webhook said were closed, at the commit
	// they had then: GitHub and Gitea keep those refs, so the listing alone would show
	// them open forever.
	closed map[string]string
	// hints are what webhooks said happened to pull requests, until a poll acts on them.
	hints map[int]hint
	// hintAt is the time (the pull request's updated_at) of the newest hint taken for
	// each pull request: an older one, a replay, is dropped.
	hintAt map[int]time.Time
	// origins is where each pull request's head comes from, as signed webhooks said.
	origins map[int]Origin
	// polled is when the last poll succeeded; zero before the first.
	polled time.Time
	// metrics counts polls (nil: none).
	metrics *metrics.Metrics
}

// SetMetrics makes Run count its polls in m (gilliam_poll_rounds_total).
func (w *Watcher) SetMetrics(m *metrics.Metrics) { w.metrics = m }

// hint is what a signed webhook said happened to a pull request. A poll acts on it only
// if the listing shows the pull request's ref at the head commit the hook names, so a
// hook cannot close (or reopen) anything the forge's refs do not agree with.
type hint struct {
	closed bool      // closed or merged; false: reopened
	head   string    // the head commit the hook names
	at     time.Time // the pull request's updated_at in the hook
}

// Origin is where a pull request's head comes from, as far as the watcher knows.
type Origin string

const (
	// OriginUnknown: no signed webhook said. It counts as a fork.
	OriginUnknown Origin = ""
	// OriginSame: the head branch is in the watched repository itself, so whoever pushed
	// it can push to the repository.
	OriginSame Origin = "same-repository"
	// OriginFork: the head branch is in another repository (a fork): anyone may have
	// written it.
	OriginFork Origin = "fork"
)

// spec says which refs a watcher follows and what they are for.
type spec struct {
	deploy   []string // full ref names or path.Match patterns of them
	forge    Forge    // set when pull-request refs are previews
	previews []string // patterns of full branch names deployed as previews
}

type refClass int

const (
	untracked refClass = iota
	deployed
	pullRequest
	branchPreview
)

// classify says what ref is for, and its pull request's number if it is one.
func (s spec) classify(ref string) (refClass, int) {
	for _, p := range s.deploy {
		if p == ref || (isPattern(p) && match(p, ref)) {
			return deployed, 0
		}
	}
	if n := prNumber(s.forge, ref); n > 0 {
		return pullRequest, n
	}
	for _, p := range s.previews {
		if match(p, ref) {
			return branchPreview, 0
		}
	}
	return untracked, 0
}

func isPattern(p string) bool { return strings.ContainsAny(p, "*?[") }

func match(pattern, ref string) bool {
	ok, _ := path.Match(pattern, ref)
	return ok
}

// prNumber is N for a pull-request head ref of forge (refs/pull/N/head on GitHub and
// Gitea, refs/merge-requests/N/head on GitLab), 0 otherwise.
func prNumber(forge Forge, ref string) int {
	var prefix string
	switch forge {
	case GitHub, Gitea:
		prefix = "refs/pull/"
	case GitLab:
		prefix = "refs/merge-requests/"
	default:
		return 0
	}
	num, ok := strings.CutPrefix(ref, prefix)
	if !ok {
		return 0
	}
	if num, ok = strings.CutSuffix(num, "/head"); !ok {
		return 0
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || strconv.Itoa(n) != num {
		return 0
	}
	return n
}

// prRef is the head ref of pull request n on forge.
func prRef(forge Forge, n int) string {
	if forge == GitLab {
		return fmt.Sprintf("refs/merge-requests/%d/head", n)
	}
	return fmt.Sprintf("refs/pull/%d/head", n)
}

// NewWatcher watches refs of repo: full names, short branch names (main means
// refs/heads/main) or path.Match patterns of full names (refs/tags/v*). It polls every
// DefaultPollInterval under Run and has no previews or webhook; Watch builds a watcher
// from a RepoConfig with all of those.
func NewWatcher(repo *Repo, refs []string, log *slog.Logger) *Watcher {
	cfg := RepoConfig{URL: repo.URL, PollInterval: DefaultPollInterval}
	for _, ref := range refs {
		cfg.Branches = append(cfg.Branches, FullRef(ref))
	}
	return newWatcher(repo, cfg, log)
}

// Watch opens the cache of the repository cfg names under dataDir (one folder per
// repository, named after its sanitized URL) and returns its watcher. It validates cfg
// (a copy: the caller's is left as it is) and fills in its defaults.
func Watch(cfg RepoConfig, dataDir string, log *slog.Logger) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("repository %s: %w", Sanitize(cfg.URL), err)
	}
	repo, err := open(cfg.URL, filepath.Join(dataDir, CacheName(cfg.URL)), cfg.Auth.credentials(cfg.URL, cfg.Forge))
	if err != nil {
		return nil, err
	}
	repo.limits = cfg.Checkout.withDefaults()
	return newWatcher(repo, cfg, log), nil
}

// CacheName is the folder name of a repository's cache: its sanitized URL, made safe.
func CacheName(rawURL string) string {
	r := strings.NewReplacer("://", "_", "/", "_", ":", "_", "@", "_", "\\", "_")
	name := strings.Trim(r.Replace(Sanitize(rawURL)), "_.")
	if name == "" {
		name = "repo"
	}
	return name
}

func newWatcher(repo *Repo, cfg RepoConfig, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	w := &Watcher{
		repo: repo, cfg: cfg, log: log.With("repo", Sanitize(repo.URL)),
		trigger: make(chan struct{}, 1),
		seen:    map[string]string{}, closed: map[string]string{}, hints: map[int]hint{},
		hintAt: map[int]time.Time{}, origins: map[int]Origin{},
	}
	for _, b := range cfg.Branches {
		w.spec.deploy = append(w.spec.deploy, fullName(b, "refs/heads/"))
	}
	for _, t := range cfg.Tags {
		w.spec.deploy = append(w.spec.deploy, fullName(t, "refs/tags/"))
	}
	if p := cfg.Previews; p != nil {
		if p.PullRequests {
			w.spec.forge = cfg.Forge
		}
		for _, b := range p.Branches {
			w.spec.previews = append(w.spec.previews, fullName(b, "refs/heads/"))
		}
	}
	w.loadSeen()
	return w
}

// loadSeen starts seen from the refs the cache holds. It reads ref files only (a tag's
// commit aside), so a cache whose objects are damaged still says what was seen; a commit
// that does not read marks the cache suspect, for the first poll to check and re-clone.
func (w *Watcher) loadSeen() {
	r := w.repo
	r.mu.RLock()
	defer r.mu.RUnlock()
	refs, err := r.git.References()
	if err != nil {
		r.suspect.Store(true)
		return
	}
	defer refs.Close()
	for {
		ref, err := refs.Next()
		if err != nil {
			break
		}
		name := ref.Name().String()
		if class, _ := w.spec.classify(name); class == untracked || ref.Type() != plumbing.HashReference {
			continue
		}
		c, err := r.peel(ref.Hash())
		switch {
		case err == nil:
			w.seen[name] = c.Hash.String()
		case strings.HasPrefix(name, "refs/tags/"):
			r.suspect.Store(true) // the commit of an annotated tag is unknown until the re-clone
		default:
			r.suspect.Store(true)
			w.seen[name] = ref.Hash().String()
		}
	}
}

func fullName(ref, prefix string) string {
	if strings.HasPrefix(ref, "refs/") {
		return ref
	}
	return prefix + ref
}

// FullRef turns a short branch name into a full ref name.
func FullRef(ref string) string { return fullName(ref, "refs/heads/") }

// Repo is the repository the watcher follows, to read files and tree hashes from.
func (w *Watcher) Repo() *Repo { return w.repo }

// Config is the configuration the watcher was built from.
func (w *Watcher) Config() RepoConfig { return w.cfg }

// Head is the commit a watched ref had at the last poll, "" when unknown.
func (w *Watcher) Head(ref string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen[FullRef(ref)]
}

// Polled is when the last poll succeeded, zero before the first: until then Refs holds
// only what the cache had, which may be stale, so nothing should be torn down for a ref
// missing from it.
func (w *Watcher) Polled() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polled
}

// RefKind says what a watched ref is for.
type RefKind int

const (
	RefDeployed      RefKind = iota + 1 // a branch or tag to deploy
	RefPullRequest                      // the head of a pull (merge) request, for its preview
	RefBranchPreview                    // a branch matching a preview pattern
)

// Classify says what a ref is for, with its pull request's number for RefPullRequest;
// false for a ref this watcher does not follow.
func (w *Watcher) Classify(ref string) (RefKind, int, bool) {
	switch class, n := w.spec.classify(ref); class {
	case deployed:
		return RefDeployed, 0, true
	case pullRequest:
		return RefPullRequest, n, true
	case branchPreview:
		return RefBranchPreview, 0, true
	}
	return 0, 0, false
}

// Origin is where pull request n's head comes from, as the signed webhooks received so
// far said; OriginUnknown when none did (after a restart, until the next hook about it).
func (w *Watcher) Origin(n int) Origin {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.origins[n]
}

// PreviewAllowed says whether the watch list lets ref be deployed as a preview, and if
// not, why (for the log and status). The watch list alone decides, never the commit's
// own gilliam.yml: a branch matching previews.branches may; a pull request's head ref
// may when previews.pull_requests is on and either previews.forks is on or a signed
// webhook said its head is in the watched repository itself. A pull request whose origin
// is unknown counts as a fork.
func (w *Watcher) PreviewAllowed(ref string) (bool, string) {
	kind, n, ok := w.Classify(ref)
	switch {
	case !ok || kind == RefDeployed:
		return false, ref + " is not a preview ref of this repository's watch list"
	case kind == RefBranchPreview:
		return true, ""
	}
	if w.cfg.Previews != nil && w.cfg.Previews.Forks {
		return true, ""
	}
	switch w.Origin(n) {
	case OriginSame:
		return true, ""
	case OriginFork:
		return false, fmt.Sprintf("pull request %d comes from a fork, and previews.forks is off", n)
	}
	return false, fmt.Sprintf("no signed webhook said where pull request %d comes from, so it counts as a fork, and previews.forks is off", n)
}

// Refs is the commit of every watched ref (deployed and previews) at the last poll.
func (w *Watcher) Refs() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.seen)
}

// move is a watched ref that moved, before its kind is known.
type move struct {
	ref      string
	old, new string
	class    refClass
	pr       int
	// closedAt is set when a webhook closed the pull request: the commit its ref keeps.
	closedAt string
	// quiet moves change what the watcher remembers and report nothing: a closed pull
	// request whose ref went away, one a webhook closed before we saw it open.
	quiet bool
}

// Poll lists the remote refs, fetches the watched refs that moved, and returns an event
// per moved ref, in ref order. A poll where nothing moved costs one listing and no fetch.
// On error nothing is reported and nothing is forgotten: an error listing refs never
// looks like deleted branches or closed pull requests.
func (w *Watcher) Poll(ctx context.Context) ([]Event, error) {
	w.poll.Lock()
	defer w.poll.Unlock()
	remote, err := w.repo.ListRefs(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	hints := maps.Clone(w.hints)
	w.mu.Unlock()

	moves := w.plan(remote, hints)
	if err := w.fetch(ctx, remote, moves); err != nil {
		return nil, err
	}
	var events []Event
	for i := range moves {
		if moves[i].quiet {
			continue
		}
		e, err := w.event(&moves[i])
		if err != nil {
			w.repo.suspect.Store(true)
			return nil, err
		}
		events = append(events, e)
	}

	w.mu.Lock()
	for _, m := range moves {
		switch {
		case m.new != "":
			w.seen[m.ref] = m.new
			delete(w.closed, m.ref)
		case m.closedAt != "":
			delete(w.seen, m.ref)
			w.closed[m.ref] = m.closedAt
		default:
			delete(w.seen, m.ref)
			delete(w.closed, m.ref)
		}
	}
	for n, h := range hints {
		if w.hints[n] == h {
			delete(w.hints, n)
		}
	}
	w.polled = time.Now()
	w.mu.Unlock()
	for _, m := range moves {
		if m.new == "" && m.closedAt == "" {
			w.repo.deleteRef(m.ref)
		}
	}
	for _, e := range events {
		w.log.Info("ref moved", "ref", e.Ref, "kind", e.Kind, "old", short(e.Old), "new", short(e.New), "pr", e.PR)
	}
	return events, nil
}

// plan compares the listing with what the last poll saw, and applies webhook hints.
func (w *Watcher) plan(remote map[string]string, hints map[int]hint) []move {
	refs := map[string]bool{}
	for ref := range remote {
		if class, _ := w.spec.classify(ref); class != untracked {
			refs[ref] = true
		}
	}
	for ref := range w.seen {
		refs[ref] = true
	}
	for ref := range w.closed {
		refs[ref] = true
	}
	var moves []move
	for _, ref := range slices.Sorted(maps.Keys(refs)) {
		class, pr := w.spec.classify(ref)
		old, now := w.seen[ref], remote[ref]
		m := move{ref: ref, old: old, new: now, class: class, pr: pr}
		if class == pullRequest {
			h, hinted := hints[pr]
			// A hint counts only when the listing agrees: the ref is there, at the commit
			// the hook names.
			hinted = hinted && now != "" && h.head == now
			if at, closed := w.closed[ref]; closed {
				switch {
				case now == "": // gone for good: forget it quietly, it was reported closed
					m.quiet = true
					moves = append(moves, m)
				case now != at || (hinted && !h.closed): // reopened, or pushed to since
					m.old = ""
					moves = append(moves, m)
				}
				continue
			}
			if hinted && h.closed {
				// Closed or merged, says the forge; its ref stays. If we never saw it
				// open, remember it closed without an event.
				m.new, m.closedAt, m.quiet = "", now, old == ""
				moves = append(moves, m)
				continue
			}
		}
		if old != now {
			moves = append(moves, m)
		}
	}
	return moves
}

// fetch brings the refs that moved into the cache. If the fetch fails and the cache turns
// out corrupt, or a read since the last poll made it suspect, the cache is re-cloned with
// every watched ref; the events stay those of the moves, as seen stays what it was.
func (w *Watcher) fetch(ctx context.Context, remote map[string]string, moves []move) error {
	var refs []string
	for _, m := range moves {
		if m.new != "" {
			refs = append(refs, m.ref)
		}
	}
	r := w.repo
	if len(refs) == 0 && !r.suspect.Load() {
		return nil // nothing moved: leave the cache to its readers
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	deep := func(ref string) bool { class, _ := w.spec.classify(ref); return class == deployed }
	var problem error
	if r.suspect.Swap(false) {
		problem = r.verify(deep)
	}
	if problem == nil {
		err := r.fetch(ctx, refs)
		if err == nil {
			return w.resolveMoves(moves)
		}
		verr := r.verify(deep)
		if ctx.Err() != nil || verr == nil {
			return err // the network or the server, not the cache
		}
		problem = fmt.Errorf("%w (after: %w)", verr, err)
	}
	w.log.Warn("cache corrupt, re-cloning", "err", problem)
	var all []string
	for ref, c := range remote {
		if class, _ := w.spec.classify(ref); class != untracked && w.closed[ref] != c {
			all = append(all, ref)
		}
	}
	slices.Sort(all)
	if err := r.reclone(ctx, all); err != nil {
		r.suspect.Store(true) // check again next time
		return fmt.Errorf("re-clone corrupt cache: %w", err)
	}
	return w.resolveMoves(moves)
}

// resolveMoves takes the commits the refs have in the cache after the fetch: the remote
// may have moved between the listing and the fetch, and the cache is what readers see.
// Callers hold w.repo.mu.
func (w *Watcher) resolveMoves(moves []move) error {
	for i := range moves {
		if moves[i].new == "" {
			continue
		}
		c, err := w.repo.resolve(moves[i].ref)
		if err != nil {
			return err
		}
		if c == "" {
			return fmt.Errorf("%s of %s: missing from the cache after the fetch", moves[i].ref, Sanitize(w.repo.URL))
		}
		moves[i].new = c
	}
	return nil
}

// event names a move.
func (w *Watcher) event(m *move) (Event, error) {
	e := Event{Repo: Sanitize(w.repo.URL), Ref: m.ref, Old: m.old, New: m.new, PR: m.pr}
	if m.pr > 0 {
		e.Origin = w.Origin(m.pr)
	}
	if m.class == deployed {
		switch {
		case m.new == "":
			e.Kind = KindDelete
		case m.old == "":
			e.Kind = KindPush
		default:
			ff, err := w.repo.isAncestor(m.old, m.new)
			if err != nil {
				return Event{}, err
			}
			e.Kind = KindPush
			if !ff {
				e.Kind = KindForcePush
			}
		}
		return e, nil
	}
	switch {
	case m.new == "":
		e.Kind = KindPRClosed
	case m.old == "":
		e.Kind = KindPROpened
	default:
		e.Kind = KindPRUpdated
	}
	return e, nil
}
