package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Config configures a Syncer.
type Config struct {
	// Repos are the repositories followed: their refs, gilliam.yml files, credentials,
	// poll intervals and previews (see gitwatch.RepoConfig).
	Repos []gitwatch.RepoConfig
	// DataDir holds the repositories' caches.
	DataDir string
	// Interval is how often the leader reconciles (default 2s): releases, roll-outs and
	// placement. Repositories are polled on their own intervals, and a webhook or a moved
	// ref starts a pass at once.
	Interval time.Duration
	// ID names this daemon in the leader lock and the log (default: hostname and pid).
	ID string
	// LockTTL is the TTL of the leader's Consul session (default 15s, at least 10s); a
	// leader that dies is replaced once Consul expires its session (between one and two
	// TTLs) and the lock delay has passed. LockDelay defaults to 5s: it keeps a new leader
	// from acting while the old one may still be finishing a write.
	LockTTL   time.Duration
	LockDelay time.Duration
	// KeepReleases is how many releases per service are kept besides those in use
	// (default 10).
	KeepReleases int
	// MaxPreviews caps the preview formations alive at once, over every repository
	// (default 10): a pull request beyond it gets none until another goes.
	MaxPreviews int
	// Placement tunes the scheduler; DeadAfter defaults to 10s.
	Placement placement.Options
	Logger    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Failpoint, when set, is called at named stages ("after-desired", "before-place"):
	// tests use it to stop a leader exactly there.
	Failpoint func(stage string)
}

// Builder makes the image a service runs; build.Builder is one.
type Builder interface {
	Build(ctx context.Context, req build.Request) (build.Result, error)
}

var _ Builder = (*build.Builder)(nil)

// Syncer is the control plane: it follows repositories, turns each new commit into builds,
// releases and a desired formation, rolls releases out, and keeps every host's assignment
// placed.
type Syncer struct {
	cfg     Config
	store   *state.Store
	builder Builder
	log     *slog.Logger
	repos   []*repoState
	kick    chan struct{} // a ref moved or a deploy finished: reconcile now

	deploys stdsync.WaitGroup // deploys in flight
	leading atomic.Bool

	mu       stdsync.Mutex
	inflight map[string]string         // target key -> commit being deployed
	releases map[string]*state.Release // immutable, so cached forever
	critical map[string]time.Time      // host -> when its liveness check was first seen failing
	passing  map[string]Passing        // Consul service -> its passing instances, since when
	unplaced string                    // the last unplaced report written, to write and log only changes
	reported bool                      // whether unplaced has been written once
	logged   map[string]bool           // one-time notices already logged
}

// repoState is one repository: its watcher and what was done with its refs.
type repoState struct {
	cfg     gitwatch.RepoConfig
	w       *gitwatch.Watcher
	key     string // folder-safe name, for the cache and the observed key
	started time.Time

	mu       stdsync.Mutex
	observed *state.Observed // loaded when leadership starts
}

// New returns a syncer; Run starts it. builder may be nil when no repository holds a
// service that builds (tests of image services).
func New(cfg Config, store *state.Store, builder Builder) (*Syncer, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 15 * time.Second
	}
	if cfg.LockDelay == 0 {
		cfg.LockDelay = 5 * time.Second
	}
	if cfg.KeepReleases == 0 {
		cfg.KeepReleases = 10
	}
	if cfg.MaxPreviews == 0 {
		cfg.MaxPreviews = 10
	}
	if cfg.Placement.DeadAfter == 0 {
		cfg.Placement.DeadAfter = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Failpoint == nil {
		cfg.Failpoint = func(string) {}
	}
	if err := gitwatch.ValidateRepos(cfg.Repos); err != nil {
		return nil, err
	}
	s := &Syncer{cfg: cfg, store: store, builder: builder, log: cfg.Logger, kick: make(chan struct{}, 1),
		inflight: map[string]string{}, releases: map[string]*state.Release{}, critical: map[string]time.Time{},
		passing: map[string]Passing{}, logged: map[string]bool{}}
	for _, rc := range cfg.Repos {
		w, err := gitwatch.Watch(rc, filepath.Join(cfg.DataDir, "repos"), cfg.Logger)
		if err != nil {
			return nil, err
		}
		s.repos = append(s.repos, &repoState{cfg: w.Config(), w: w, key: gitwatch.CacheName(rc.URL), started: time.Now()})
	}
	return s, nil
}

// Watchers are the repositories' watchers, for a webhook receiver to trigger.
func (s *Syncer) Watchers() []*gitwatch.Watcher {
	ws := make([]*gitwatch.Watcher, len(s.repos))
	for i, r := range s.repos {
		ws[i] = r.w
	}
	return ws
}

// Run polls the repositories (leader or not: a standby keeps its caches warm), contends
// for leadership and, while leading, reconciles every Interval and whenever a ref moves,
// until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	events := make(chan gitwatch.Event)
	var watchers stdsync.WaitGroup
	for _, r := range s.repos {
		watchers.Add(1)
		go func() { defer watchers.Done(); r.w.Run(ctx, events) }()
	}
	go func() {
		for {
			select {
			case <-events:
				s.poke()
			case <-ctx.Done():
				return
			}
		}
	}()
	defer watchers.Wait()

	for ctx.Err() == nil {
		lock, err := s.store.Client().LockOpts(&api.LockOptions{
			Key:         s.store.LeaderKey(),
			Value:       []byte(s.cfg.ID),
			SessionName: "gilliam-sync leader " + s.cfg.ID,
			SessionTTL:  s.cfg.LockTTL.String(),
			LockDelay:   s.cfg.LockDelay,
		})
		if err != nil {
			return fmt.Errorf("leader lock: %w", err)
		}
		lost, err := lock.Lock(ctx.Done())
		if err != nil {
			s.log.Warn("leader lock failing", "err", err)
			sleep(ctx, s.cfg.Interval)
			continue
		}
		if lost == nil { // ctx ended while waiting
			break
		}
		s.log.Info("leading", "id", s.cfg.ID)
		s.lead(ctx, lost)
		lock.Unlock()
		if ctx.Err() == nil {
			s.log.Warn("leadership lost")
		}
	}
	return nil
}

func (s *Syncer) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Leading reports whether this daemon leads now.
func (s *Syncer) Leading() bool { return s.leading.Load() }

func (s *Syncer) lead(ctx context.Context, lost <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	s.leading.Store(true)
	defer func() {
		s.leading.Store(false)
		cancel()
		s.deploys.Wait()
	}()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	// A new leader reads what was done, rather than trusting what it remembers.
	for _, r := range s.repos {
		r.mu.Lock()
		r.observed = nil
		r.mu.Unlock()
	}
	failing := false
	for ctx.Err() == nil {
		err := s.ReconcileOnce(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Warn("reconcile failing", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("reconcile recovered")
			failing = false
		}
		select {
		case <-ctx.Done():
		case <-s.kick:
		case <-time.After(s.cfg.Interval):
		}
	}
}

// PollOnce polls every repository once (Run's watchers do it on their own otherwise).
func (s *Syncer) PollOnce(ctx context.Context) error {
	var errs []error
	for _, r := range s.repos {
		if _, err := r.w.Poll(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReconcileOnce is one pass of the leader: start releasing the commits (and config
// changes) not yet handled, tear down the previews that are gone or expired, advance every
// service towards its target release and scale, and place what is desired on the live
// hosts. Releases, which may build, run in the background and start another pass when done.
func (s *Syncer) ReconcileOnce(ctx context.Context) error {
	var errs []error
	for _, r := range s.repos {
		errs = append(errs, s.reconcileRepo(ctx, r))
	}
	errs = append(errs, s.finishTeardowns(ctx), s.advanceAll(ctx))
	s.cfg.Failpoint("before-place")
	errs = append(errs, s.place(ctx))
	return errors.Join(errs...)
}

// SyncOnce polls, reconciles, waits for the releases it started, and reconciles again: one
// complete pass, for tests and one-shot use.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	err := s.PollOnce(ctx)
	err = errors.Join(err, s.ReconcileOnce(ctx))
	s.deploys.Wait()
	return errors.Join(err, s.ReconcileOnce(ctx))
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
