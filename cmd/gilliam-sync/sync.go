package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

var syncCmd = &command{
	name:    "sync",
	usage:   "--config gilliam-sync.yml | --repo URL --registry HOST:PORT [flags]",
	summary: "run the sync daemon: watch repositories, build, release, roll out, place (one of several leads)",
	run:     runSync,
}

func runSync(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	config := fs.String("config", "", "configuration file (gilliam-sync.yml, see docs/sync.md); or the flags below for one repository")
	repo := addRepoFlags(fs, time.Minute)
	registry := fs.String("registry", "", "registry images are published to, host:port")
	builder := fs.String("builder", build.DefaultBuilder, "buildpack builder image")
	data := fs.String("data", ".gilliam/sync", "data directory: repository caches, pack's home, build logs")
	interval := fs.Duration("interval", 30*time.Second, "the longest the leader goes without deciding (it decides at once on every change it follows)")
	id := fs.String("id", "", "this daemon's name in the leader lock (default hostname-pid)")
	lockTTL := fs.Duration("lock-ttl", 15*time.Second, "TTL of the leader's Consul session (at least 10s)")
	lockDelay := fs.Duration("lock-delay", 5*time.Second, "Consul lock delay after a leader's session ends")
	livenessTTL := fs.Duration("liveness-ttl", 5*time.Second, "TTL of the daemon's own Consul check, which the leader's session is bound to: a dead leader loses the lock within it")
	deadAfter := fs.Duration("dead-after", 10*time.Second, "a host failing its liveness check this long is dead: its instances move")
	keySrc := rootKeyFlag(fs, "; default: <data>/sync.key, made at the first start")
	hooks := fs.String("webhooks-listen", "", "address of the webhook receiver (/hooks/github, /hooks/gitlab, /hooks/gitea); empty: none")
	metricsAddr := metricsFlag(fs)
	logsF := addLogsServeFlags(fs, "this daemon's build logs")
	newStore := consulFlags(fs)
	logger := logFlags(fs, stderr)
	if positional, err := parseArgs(fs, args); err != nil {
		return flagExit(err)
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync sync: unexpected arguments %q\n", positional)
		return 2
	}
	log, err := logger()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync sync:", err)
		return 2
	}

	var cfg *daemonConfig
	if *config != "" {
		if *repo.url != "" {
			fmt.Fprintln(stderr, "gilliam-sync sync: --config and --repo do not mix: list repositories in the file")
			return 2
		}
		if cfg, err = loadDaemonConfig(*config); err != nil {
			fmt.Fprintln(stderr, "gilliam-sync sync:", err)
			return 2
		}
	} else {
		if *repo.url == "" || *registry == "" {
			fmt.Fprintln(stderr, "gilliam-sync sync: --config, or --repo and --registry, are required")
			fs.Usage()
			return 2
		}
		cfg = &daemonConfig{Registry: *registry, Builder: *builder, Data: *data, Interval: *interval,
			Repos: []gitwatch.RepoConfig{repo.config()}}
		cfg.Leader.ID, cfg.Leader.LockTTL, cfg.Leader.LockDelay, cfg.Leader.LivenessTTL = *id, *lockTTL, *lockDelay, *livenessTTL
		cfg.Placement.DeadAfter = *deadAfter
		cfg.Webhooks.Listen = *hooks
		cfg.defaults()
		if err := cfg.validate(); err != nil {
			fmt.Fprintln(stderr, "gilliam-sync sync:", err)
			return 2
		}
	}
	if *keySrc.file != "" {
		cfg.KeyFile = *keySrc.file
	}
	m := metrics.New("sync")
	store, err := newStore(m)
	if err != nil {
		log.Error("consul", "err", err)
		return 1
	}
	if _, err := serveMetrics(ctx, *metricsAddr, m, log); err != nil {
		fmt.Fprintln(stderr, "gilliam-sync sync:", err)
		return 2
	}
	logs, err := logsF.open(defaultAdvertise())
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync sync:", err)
		return 2
	}
	if err := runSyncDaemon(ctx, cfg, store, log, syncExtras{metrics: m, logs: logs}); err != nil {
		log.Error("sync stopped", "err", err)
		return 1
	}
	return 0
}

// syncExtras are what a sync daemon gets besides its configuration: its metrics, and the
// listener its build logs are served on (nil: none; up serves them on its own).
type syncExtras struct {
	metrics *metrics.Metrics
	logs    *logsServer
	logsURL string
}

// runSyncDaemon runs the builder, the syncer and the webhook receiver of a configuration
// until ctx ends.
func runSyncDaemon(ctx context.Context, cfg *daemonConfig, store *state.Store, log *slog.Logger, x syncExtras) error {
	iso, err := cfg.buildIsolation()
	if err != nil {
		return err
	}
	builder, err := build.New(build.Config{Registry: cfg.Registry, Builder: cfg.Builder,
		DataDir: filepath.Join(cfg.Data, "build"), Concurrency: cfg.Builds.Concurrency, Timeout: cfg.Builds.Timeout,
		Isolation: iso, Registries: cfg.buildRegistries(), Keychain: cfg.keychain, Logger: log.With("component", "build")})
	if err != nil {
		return err
	}
	defer func() {
		if err := builder.Close(); err != nil {
			log.Warn("builder closed", "err", err)
		}
	}()
	root, reload, err := cfg.rootKey()
	if err != nil {
		return err
	}
	log.Info("root key", "fingerprint", root.Public().Fingerprint(), "source", cfg.keySource())
	sc := sync.Config{Key: root, ReloadKey: reload,
		Repos: cfg.Repos, DataDir: cfg.Data, Interval: cfg.Interval,
		ID: cfg.Leader.ID, LockTTL: cfg.Leader.LockTTL, LockDelay: cfg.Leader.LockDelay, LivenessTTL: cfg.Leader.LivenessTTL,
		KeepReleases: cfg.Releases.Keep, MaxPreviews: cfg.Previews.Max, MaxInstances: cfg.Limits.InstancesPerFormation,
		Logger: log.With("component", "sync"), Failpoint: failpoint(log), Metrics: x.metrics, LogsURL: x.logsURL,
	}
	if x.logs != nil {
		sc.LogsURL = x.logs.url
		x.logs.serve(ctx, buildLogsHandler(filepath.Join(cfg.Data, "build"), x.logs.token), log)
	}
	sc.Placement.Binpack, sc.Placement.DeadAfter = cfg.Placement.Binpack, cfg.Placement.DeadAfter
	syncer, err := sync.New(sc, store, builder)
	if err != nil {
		return err
	}
	if cfg.Webhooks.Listen != "" {
		wh := gitwatch.NewWebhooks(syncer.Watchers(), log.With("component", "webhooks"))
		wh.Metrics = x.metrics
		hooks, err := gitwatch.Listen(cfg.Webhooks, wh, log.With("component", "webhooks"))
		if err != nil {
			return err
		}
		go func() {
			if err := hooks.Serve(ctx); err != nil {
				log.Error("webhook receiver stopped", "err", err)
			}
		}()
		log.Info("webhook receiver listening", "address", hooks.Addr().String(), "tls", hooks.TLS())
	}
	go collectBuilds(ctx, cfg, syncer, builder, store, log.With("component", "gc"))
	return syncer.Run(ctx)
}

// collectBuilds runs the build garbage collection every Builds.GCInterval while this
// daemon leads: cache volumes of services gone, dangling build images, registry images no
// kept release uses. A failure to read Consul skips the round: GC never runs on a partial
// picture of what is in use.
func collectBuilds(ctx context.Context, cfg *daemonConfig, syncer *sync.Syncer, builder *build.Builder, store *state.Store, log *slog.Logger) {
	tick := time.NewTicker(cfg.Builds.GCInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !syncer.Leading() {
			continue
		}
		live, err := liveBuilds(ctx, store)
		if err != nil || len(live.Services) == 0 {
			log.Warn("build garbage collection skipped: what is in use could not be read", "err", err)
			continue
		}
		g, err := builder.GC(ctx, live, build.GCOptions{Grace: cfg.Builds.GCGrace})
		if err != nil {
			log.Warn("build garbage collection failed", "err", err)
			continue
		}
		log.Info("build garbage collected", "volumes", len(g.Volumes), "images", len(g.Images),
			"registry_images", len(g.Manifests), "logs", len(g.Logs), "blobs", g.Blobs)
	}
}

// failpoint reads GILLIAM_FAILPOINT=pause:STAGE: the daemon stops at that stage ("after-
// desired": a deploy has written its desired state; "before-place") until killed, and so
// does every pass after it. It exists for tests of a leader dying at the worst moment;
// nothing sets it in normal use.
func failpoint(log *slog.Logger) func(string) {
	action, stage, ok := strings.Cut(os.Getenv("GILLIAM_FAILPOINT"), ":")
	if !ok || action != "pause" {
		return nil
	}
	var paused atomic.Bool
	return func(at string) {
		if at != stage && !paused.Load() {
			return
		}
		if paused.CompareAndSwap(false, true) {
			log.Warn("failpoint: paused", "stage", at)
		}
		for {
			time.Sleep(time.Hour)
		}
	}
}

// rootKey reads the daemon's root key: $GILLIAM_SYNC_KEY when set, else the key file
// (made when missing); reload reads the file again (nil for the environment).
func (c *daemonConfig) rootKey() (*seal.Key, func() (*seal.Key, error), error) {
	if env := os.Getenv(keyEnv); env != "" && c.KeyFile == "" {
		k, err := seal.ParseKey(env)
		if err != nil {
			return nil, nil, fmt.Errorf("$%s: %w", keyEnv, err)
		}
		return k, nil, nil
	}
	path := c.KeyFile
	if path == "" {
		path = filepath.Join(c.Data, "sync.key")
	}
	k, _, err := seal.LoadKeyFile(path, true)
	if err != nil {
		return nil, nil, err
	}
	reload := func() (*seal.Key, error) {
		k, _, err := seal.LoadKeyFile(path, false)
		return k, err
	}
	return k, reload, nil
}

// keySource says where rootKey reads the key, for the log.
func (c *daemonConfig) keySource() string {
	switch {
	case c.KeyFile != "":
		return c.KeyFile
	case os.Getenv(keyEnv) != "":
		return "$" + keyEnv
	}
	return filepath.Join(c.Data, "sync.key")
}
