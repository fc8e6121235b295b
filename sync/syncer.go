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

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
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
	// Interval is the longest the leader goes without deciding (default 30s). It decides
	// at once whenever Consul's state, a host or an instance's health changes (blocking
	// queries), a ref moves, or an image is ready, and at the times its decisions name
	// (a retry, a deadline, a TTL): the interval is only a safety net.
	Interval time.Duration
	// RetryBase and RetryMax bound the backoff between attempts at a commit that failed
	// in a way retrying can fix (default 2s, doubling, at most 1m).
	RetryBase, RetryMax time.Duration
	// ID names this daemon in the leader lock and the log (default: hostname and pid).
	ID string
	// LockTTL is the TTL of the leader's Consul session (default 15s, at least 10s); a
	// leader that dies is replaced once Consul expires its session (between one and two
	// TTLs) and the lock delay has passed. LockDelay defaults to 5s: it keeps a new leader
	// from acting while the old one may still be finishing a write.
	LockTTL   time.Duration
	LockDelay time.Duration
	// LivenessTTL is the TTL of the daemon's own check on its local Consul agent (default
	// 5s), renewed five times per TTL; the leader's session is bound to it, so a leader
	// that dies loses the lock within it, rather than within one to two LockTTLs.
	LivenessTTL time.Duration
	// KeepReleases is how many releases per service are kept besides those in use
	// (default 10).
	KeepReleases int
	// MaxInstances caps the instances one formation may ask for, over all its services
	// (default 500): a gilliam.yml past it is refused, so one repository cannot ask the
	// scheduler for more than the operator allows.
	MaxInstances int
	// MaxPreviews caps the preview formations alive at once, over every repository
	// (default 10): a pull request beyond it gets none until another goes.
	MaxPreviews int
	// Registries is where image services' references may come from when the syncer has
	// no builder (a builder applies its own, build.Config.Registries); nil resolves any
	// reference, which only tests do.
	Registries *build.Registries
	// Placement tunes the scheduler; DeadAfter defaults to 10s.
	Placement placement.Options
	Logger    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Key is the installation's root key (docs/security.md): every sync daemon of an
	// installation has the same one. The first leader publishes its public half; a daemon
	// whose key is not the one published does not lead. Nil: a key made in memory, for
	// tests and one-off runs.
	Key *seal.Key
	// ReloadKey reads the root key again when Consul names another one (after `gilliam-sync
	// keys rotate`); nil: the daemon stops leading instead.
	ReloadKey func() (*seal.Key, error)
	// LogsURL is where this daemon serves its build logs, in its Consul registration for
	// `gilliam-sync logs build` to find (empty: none).
	LogsURL string
	// Metrics records builds, releases, roll-outs, the deploy timeline's steps and
	// leadership (nil: none).
	Metrics *metrics.Metrics
	// Failpoint, when set, is called at named stages ("after-desired", "before-place"):
	// tests use it to stop a leader exactly there.
	Failpoint func(stage string)
}

// Builder makes the image a service runs; build.Builder is one.
type Builder interface {
	Build(ctx context.Context, req build.Request) (build.Result, error)
}

var _ Builder = (*build.Builder)(nil)

// Syncer is the control plane, built as observe, decide, apply: an observer follows
// Consul and the repositories; Reconcile, a pure function, decides; an executor applies
// the decision and remembers what the next one must know.
type Syncer struct {
	cfg     Config
	store   *state.Store
	log     *slog.Logger
	repos   []*repoState
	kick    chan struct{} // something changed: decide now
	obs     *observer
	exec    *executor
	keys    *keyring
	notify  *notifier // nil: no repository asks for forge notifications
	leading atomic.Bool
}

// repoState is one repository and its watcher.
type repoState struct {
	cfg gitwatch.RepoConfig
	w   *gitwatch.Watcher
	key string // folder-safe name, for the cache and the observed key
	// open is what the forge's API says of its pull requests (nil: no API configured).
	open *openPRs
}

// New returns a syncer; Run starts it. builder may be nil when no repository holds a
// service that builds (tests of image services).
func New(cfg Config, store *state.Store, builder Builder) (*Syncer, error) {
	cfg = withDefaults(cfg)
	if err := gitwatch.ValidateRepos(cfg.Repos); err != nil {
		return nil, err
	}
	if cfg.Key == nil {
		k, err := seal.Generate()
		if err != nil {
			return nil, err
		}
		cfg.Key = k
		cfg.Logger.Warn("no root key given: this daemon made one that lives in its memory only; config vars it seals cannot be opened after it stops", "fingerprint", k.Public().Fingerprint())
	}
	s := &Syncer{cfg: cfg, store: store, log: cfg.Logger, kick: make(chan struct{}, 1), keys: newKeyring(cfg.Key, cfg.ReloadKey)}
	s.exec = newExecutor(store, s.keys, builder, cfg.Registries, cfg.Logger, cfg.Failpoint, s.poke)
	s.exec.metrics, s.exec.now = cfg.Metrics, cfg.Now
	for _, rc := range cfg.Repos {
		w, err := gitwatch.Watch(rc, filepath.Join(cfg.DataDir, "repos"), cfg.Logger)
		if err != nil {
			return nil, err
		}
		w.SetMetrics(cfg.Metrics)
		r := &repoState{cfg: w.Config(), w: w, key: gitwatch.CacheName(rc.URL)}
		s.repos = append(s.repos, r)
		s.exec.repos[r.key] = w.Repo()
	}
	s.obs = newObserver(store, s.keys, s.repos, cfg.Now, cfg.Logger, s.poke)
	n, err := newNotifier(store, s.repos, cfg.Logger, cfg.Now)
	if err != nil {
		return nil, err
	}
	s.notify = n
	for _, r := range s.repos {
		if nr, ok := n.repoFor(r.key); ok && r.cfg.Previews != nil && r.cfg.Previews.PullRequests {
			r.open = newOpenPRs(nr.client, r.w, cfg.Logger)
		}
	}
	return s, nil
}

func withDefaults(cfg Config) Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Interval, 30*time.Second)
	def(&cfg.LockTTL, 15*time.Second)
	def(&cfg.LockDelay, 5*time.Second)
	def(&cfg.LivenessTTL, 5*time.Second)
	def(&cfg.Placement.DeadAfter, 10*time.Second)
	def(&cfg.RetryBase, 2*time.Second)
	def(&cfg.RetryMax, time.Minute)
	if cfg.KeepReleases == 0 {
		cfg.KeepReleases = 10
	}
	if cfg.MaxPreviews == 0 {
		cfg.MaxPreviews = 10
	}
	if cfg.MaxInstances == 0 {
		cfg.MaxInstances = 500
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
	return cfg
}

func (s *Syncer) policy() Policy { return s.cfg.Policy() }

// Policy is the decisions' part of a configuration, defaults filled in: what `plan`
// decides with.
func (c Config) Policy() Policy {
	c = withDefaults(c)
	return Policy{KeepReleases: c.KeepReleases, MaxPreviews: c.MaxPreviews, MaxInstances: c.MaxInstances, Placement: c.Placement,
		Retry: fault.Backoff{Base: c.RetryBase, Max: c.RetryMax}}
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
// for leadership and, while leading, decides and applies until ctx ends.
func (s *Syncer) Run(ctx context.Context) error {
	events := make(chan gitwatch.Event)
	var watchers stdsync.WaitGroup
	for _, r := range s.repos {
		watchers.Add(1)
		go func() { defer watchers.Done(); r.w.Run(ctx, events) }()
		if r.open != nil {
			watchers.Add(1)
			go func() { defer watchers.Done(); r.open.run(ctx, s.poke) }()
		}
	}
	go func() {
		// A poll that moved no ref may still change a decision: a webhook taught the
		// watcher where a pull request comes from (its preview may now start). So every
		// finished poll is news too.
		polled := make([]time.Time, len(s.repos))
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-events:
				s.poke()
			case <-tick.C:
				for i, r := range s.repos {
					if p := r.w.Polled(); !p.Equal(polled[i]) {
						polled[i] = p
						s.poke()
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	defer watchers.Wait()
	checkID := s.liveness(ctx)
	for ctx.Err() == nil {
		lock, err := s.store.LeaderLock(s.cfg.ID, s.cfg.LockTTL, s.cfg.LockDelay, checkID)
		if err != nil {
			return fmt.Errorf("leader lock: %w", err)
		}
		lost, err := lock.Lock(ctx.Done())
		if err != nil {
			s.log.Warn("leader lock failing", "err", err)
			sleep(ctx, 2*time.Second)
			continue
		}
		if lost == nil { // ctx ended while waiting
			break
		}
		s.log.Info("leading", "id", s.cfg.ID)
		err = s.lead(ctx, lost)
		lock.Unlock()
		if errors.Is(err, ErrNotRootKey) {
			s.log.Error("not leading: config vars would not open", "err", err)
			sleep(ctx, s.cfg.LockTTL) // leave the lock to a daemon with the right key
			continue
		}
		if ctx.Err() == nil {
			s.log.Warn("leadership lost")
		}
	}
	return nil
}

// liveness registers this daemon's TTL check on the local agent and keeps it passing
// until ctx ends, then removes it; the leader's session is bound to it, so a leader that
// dies loses the lock within LivenessTTL. It returns "" when the check cannot be
// registered (the session's own TTL then decides, which is slower).
func (s *Syncer) liveness(ctx context.Context) string {
	checkID, err := s.store.RegisterSyncDaemon(s.cfg.ID, s.cfg.LivenessTTL, s.cfg.LogsURL)
	if err != nil {
		s.log.Warn("no liveness check: a lost leader is noticed by its session's TTL only", "err", err)
		return ""
	}
	go func() {
		t := time.NewTicker(s.cfg.LivenessTTL / 5)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				_ = s.store.DeregisterSyncDaemon(s.cfg.ID)
				return
			case <-t.C:
				if err := s.store.PassSyncDaemon(checkID); err != nil {
					s.log.Debug("liveness check not renewed", "err", err)
				}
			}
		}
	}()
	return checkID
}

func (s *Syncer) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Leading reports whether this daemon leads now.
func (s *Syncer) Leading() bool { return s.leading.Load() }

// lead follows Consul and decides until leadership is lost or ctx ends.
func (s *Syncer) lead(ctx context.Context, lost <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		err := s.keys.ensure(ctx, s.store, s.cfg.Now(), true)
		if err == nil {
			break
		}
		if errors.Is(err, ErrNotRootKey) || ctx.Err() != nil {
			return err
		}
		s.log.Warn("root key not read; trying again", "err", err)
		sleep(ctx, s.cfg.RetryBase)
	}
	s.leading.Store(true)
	s.cfg.Metrics.Leading(true)
	s.exec.forget() // a new leader reads what was done, rather than trusting what it remembers
	var following stdsync.WaitGroup
	following.Add(1)
	go func() { defer following.Done(); s.obs.follow(ctx) }()
	if s.notify != nil {
		following.Add(1)
		go func() { defer following.Done(); s.notify.run(ctx) }()
	}
	defer func() {
		s.leading.Store(false)
		s.cfg.Metrics.Leading(false)
		cancel()
		following.Wait()
		s.exec.work.Wait()
	}()
	s.obs.ready(ctx) // never decide on a partial picture
	failing := false
	for ctx.Err() == nil {
		world := s.obs.World()
		if !s.keys.matches(world.KV.RootKey) {
			return fmt.Errorf("%w: Consul names root key %s (rotated?)", ErrNotRootKey, world.KV.RootKey.Fingerprint)
		}
		dec := Reconcile(Input{World: world, Memory: s.exec.Memory(), Policy: s.policy()})
		wrote, err := s.exec.Apply(ctx, dec.Actions)
		s.notify.offer(world, s.exec.Memory()) // after Apply: the images it started are in flight
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Warn("reconcile failing", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("reconcile recovered")
			failing = false
		}
		if wrote {
			s.obs.waitPast(ctx, world.KV.Index, 2*time.Second) // decide next on a snapshot that holds the writes
			continue
		}
		s.idle(ctx, dec.Wake, failing)
	}
	return nil
}

// idle waits for a change, the decision's wake time, or the safety interval.
func (s *Syncer) idle(ctx context.Context, wake time.Time, failing bool) {
	d := s.cfg.Interval
	if failing {
		d = min(d, s.cfg.RetryBase)
	}
	if !wake.IsZero() {
		d = min(d, max(wake.Sub(s.cfg.Now()), 10*time.Millisecond))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-s.kick:
	case <-t.C:
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

// ReconcileOnce reads Consul once (no blocking), decides and applies: one pass of the
// leader. Image resolutions it starts run in the background.
func (s *Syncer) ReconcileOnce(ctx context.Context) (wrote bool, more bool, err error) {
	if s.keys.releaseIDKey() == nil {
		if err := s.keys.ensure(ctx, s.store, s.cfg.Now(), true); err != nil {
			return false, false, err
		}
	}
	if err := s.obs.refresh(ctx); err != nil {
		return false, false, err
	}
	dec := Reconcile(Input{World: s.obs.World(), Memory: s.exec.Memory(), Policy: s.policy()})
	wrote, err = s.exec.Apply(ctx, dec.Actions)
	return wrote, len(dec.Actions) > 0, err
}

// SyncOnce polls, then decides and applies until nothing is left to do now (waiting for
// the images it needs): one complete pass, for tests and one-shot use.
func (s *Syncer) SyncOnce(ctx context.Context) error {
	err := s.PollOnce(ctx)
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		before := s.exec.resolutions.Load()
		wrote, _, rerr := s.ReconcileOnce(ctx)
		s.exec.work.Wait()
		if rerr != nil {
			return errors.Join(err, rerr)
		}
		if !wrote && s.exec.resolutions.Load() == before {
			break // nothing written and no image came: nothing more to do now
		}
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
