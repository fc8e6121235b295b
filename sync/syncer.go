package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	// Placement tunes the scheduler; DeadAfter defaults to 30s.
	Placement placement.Options
	Logger    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Failpoint, when set, is called at named stages of a pass ("before-place"): tests use
	// it to stop a leader exactly there.
	Failpoint func(stage string)
}

// Builder builds services' images; build.Buildpacks is one.
type Builder interface {
	Registry() string
	BuilderID(ctx context.Context) (string, error)
	Build(ctx context.Context, req build.PackRequest) (build.PackResult, error)
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

	mu            stdsync.Mutex
	releases      map[string]*state.Release // immutable, so cached forever
	critical      map[string]time.Time      // host -> when its liveness check was first seen failing
	passing       map[string]Passing        // Consul service -> its passing instances, since when
	unplaced      string                    // the last unplaced report written, to write and log only changes
	unplacedKnown bool
}

// repoState is what the syncer remembers of a repository between passes, per watched ref.
type repoState struct {
	cfg     Repo
	repo    *gitwatch.Repo
	watcher *gitwatch.Watcher
	// formations is the formation each ref deployed as at its last gilliam.yml that
	// parsed, to report errors under and to notice config changes.
	formations map[string]string
	// done is the last commit handled per ref: deployed, or refused for a reason retrying
	// cannot fix.
	done map[string]string
}

// New returns a syncer; Run starts it.
func New(cfg Config, store *state.Store, builder Builder) (*Syncer, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 15 * time.Second
	}
	if cfg.LockDelay == 0 {
		cfg.LockDelay = 5 * time.Second
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.Failpoint == nil {
		cfg.Failpoint = func(string) {}
	}
	if cfg.KeepReleases == 0 {
		cfg.KeepReleases = 10
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
		releases: map[string]*state.Release{}, critical: map[string]time.Time{}, passing: map[string]Passing{}}
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
			watcher:    gitwatch.NewWatcher(repo, []string{rc.Ref}, cfg.Logger),
			formations: map[string]string{}, done: map[string]string{}})
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
			Value:       []byte(s.cfg.ID),
			SessionName: "gilliam-sync leader " + s.cfg.ID,
			SessionTTL:  s.cfg.LockTTL.String(),
			LockDelay:   s.cfg.LockDelay,
		})
		if err != nil {
			return fmt.Errorf("leader lock: %w", err)
		}
		standby, stopStandby := context.WithCancel(ctx)
		warm := make(chan struct{})
		go func() { defer close(warm); s.standby(standby) }()
		lost, err := lock.Lock(ctx.Done())
		stopStandby()
		<-warm
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

// standby keeps the repository caches fetched while another daemon leads, so a takeover
// starts from warm caches: a hot standby.
func (s *Syncer) standby(ctx context.Context) {
	for ctx.Err() == nil {
		for _, r := range s.repos {
			r.watcher.Poll(ctx)
		}
		sleep(ctx, s.cfg.Interval)
	}
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

// ReconcileOnce is one pass of the control plane: poll every repository and release the
// new commits (or the same commit again when its formation's config vars changed), advance
// every service towards its target release and scale, and place what is desired on the
// live hosts. Tests call it directly.
func (s *Syncer) ReconcileOnce(ctx context.Context) error {
	var errs []error
	for _, r := range s.repos {
		if _, err := r.watcher.Poll(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		ref := gitwatch.FullRef(r.cfg.Ref)
		t := target{repo: r, ref: ref, commit: r.watcher.Head(ref)}
		if t.commit == "" {
			continue
		}
		if t.commit != r.done[ref] {
			errs = append(errs, s.deploy(ctx, t, "push"))
		} else if changed, err := s.configChanged(ctx, r.formations[ref]); err != nil {
			errs = append(errs, err)
		} else if changed {
			errs = append(errs, s.deploy(ctx, t, "config"))
		}
	}
	errs = append(errs, s.advanceAll(ctx))
	s.cfg.Failpoint("before-place")
	errs = append(errs, s.place(ctx))
	return errors.Join(errs...)
}

// configChanged reports whether a formation's config vars changed since its releases were
// derived.
func (s *Syncer) configChanged(ctx context.Context, formation string) (bool, error) {
	if formation == "" {
		return false, nil
	}
	_, index, err := s.store.Config(ctx, formation)
	if err != nil {
		return false, err
	}
	d, _, err := s.store.Desired(ctx, formation)
	if err != nil || d == nil {
		return false, err
	}
	return index != d.ConfigIndex, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
