package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	stdsync "sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Repo is one watched repository.
type Repo struct {
	// URL is a clone URL or a local path.
	URL string
	// Ref is the branch deployed (default main).
	Ref string
	// File is the path of the gilliam.yml in the repository (default gilliam.yml).
	File string
}

// Config configures a Syncer.
type Config struct {
	Repos []Repo
	// DataDir holds the repositories' caches and the builds' sources.
	DataDir string
	// Interval is how often repositories are polled and placement re-run (default 5s).
	Interval time.Duration
	// LockTTL is the TTL of the leader's Consul session (default 15s): a leader that dies
	// loses the lock within it, plus Consul's lock delay.
	LockTTL time.Duration
	// Placement tunes the scheduler; DeadAfter defaults to 30s.
	Placement placement.Options
	Logger    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Builder builds services' images; build.Buildpacks is one.
type Builder interface {
	Registry() string
	BuilderID(ctx context.Context) (string, error)
	Build(ctx context.Context, req build.Request) (build.Result, error)
}

var _ Builder = (*build.Buildpacks)(nil)

// Syncer is the control plane: it follows repositories, turns each new commit into builds,
// releases and a desired formation, and keeps every host's assignment placed.
type Syncer struct {
	cfg     Config
	store   *state.Store
	builder Builder
	log     *slog.Logger
	repos   []*repoState

	mu       stdsync.Mutex
	releases map[string]*state.Release // immutable, so cached forever
	critical map[string]time.Time      // host -> when its liveness check was first seen failing
	unplaced string                    // the last unplaced report, to log only changes
}

// repoState is what the syncer remembers of a repository between passes.
type repoState struct {
	cfg     Repo
	repo    *gitwatch.Repo
	watcher *gitwatch.Watcher
	// formation is the name from the last gilliam.yml that parsed, to report errors under.
	formation string
	// done is the last commit handled: deployed, or refused for a reason retrying cannot fix.
	done string
}

// New returns a syncer; Run starts it.
func New(cfg Config, store *state.Store, builder Builder) (*Syncer, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 15 * time.Second
	}
	if cfg.Placement.DeadAfter == 0 {
		cfg.Placement.DeadAfter = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Syncer{cfg: cfg, store: store, builder: builder, log: cfg.Logger,
		releases: map[string]*state.Release{}, critical: map[string]time.Time{}}
	for _, rc := range cfg.Repos {
		if rc.Ref == "" {
			rc.Ref = "main"
		}
		if rc.File == "" {
			rc.File = "gilliam.yml"
		}
		dir := filepath.Join(cfg.DataDir, "repos", cacheName(rc.URL))
		repo, err := gitwatch.Open(rc.URL, dir, nil)
		if err != nil {
			return nil, err
		}
		s.repos = append(s.repos, &repoState{cfg: rc, repo: repo,
			watcher: gitwatch.NewWatcher(repo, []string{rc.Ref}, cfg.Logger)})
	}
	return s, nil
}

// cacheName turns a repository URL into a folder name.
func cacheName(url string) string {
	r := strings.NewReplacer("://", "_", "/", "_", ":", "_", "@", "_")
	return strings.Trim(r.Replace(gitwatch.Sanitize(url)), "_.")
}

// Run contends for leadership and, while leading, reconciles every Interval until ctx ends.
// Standbys wait on the lock, ready to take over when the leader's session ends.
func (s *Syncer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		lock, err := s.store.Client().LockOpts(&api.LockOptions{
			Key:         s.store.LeaderKey(),
			SessionName: "gilliam-sync leader",
			SessionTTL:  s.cfg.LockTTL.String(),
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
		s.log.Info("leading")
		s.lead(ctx, lost)
		lock.Unlock()
		if ctx.Err() == nil {
			s.log.Warn("leadership lost")
		}
	}
	return nil
}

func (s *Syncer) lead(ctx context.Context, lost <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
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
		sleep(ctx, s.cfg.Interval)
	}
}

// ReconcileOnce is one pass of the control plane: poll every repository, deploy the new
// commits, and place what is desired on the live hosts. Tests call it directly.
func (s *Syncer) ReconcileOnce(ctx context.Context) error {
	var errs []error
	for _, r := range s.repos {
		if _, err := r.watcher.Poll(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		commit := r.watcher.Head(r.cfg.Ref)
		if commit == "" || commit == r.done {
			continue
		}
		errs = append(errs, s.deploy(ctx, r, commit))
	}
	errs = append(errs, s.place(ctx))
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
