package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

var syncCmd = &command{
	name:    "sync",
	usage:   "--repo URL --registry HOST:PORT [flags]",
	summary: "run the sync daemon: watch repositories, build, release, place (one of several leads)",
	run:     runSync,
}

func runSync(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	repo := fs.String("repo", "", "repository to deploy: a clone URL or a local path (required)")
	ref := fs.String("ref", "main", "branch to deploy")
	file := fs.String("file", "gilliam.yml", "path of the gilliam.yml in the repository")
	registry := fs.String("registry", "", "registry images are published to, host:port (required)")
	builder := fs.String("builder", build.DefaultBuilder, "buildpack builder image")
	data := fs.String("data", ".gilliam/sync", "data directory: repository caches, build sources")
	interval := fs.Duration("interval", 5*time.Second, "how often repositories are polled and placement runs")
	id := fs.String("id", "", "this daemon's name in the leader lock (default hostname-pid)")
	lockTTL := fs.Duration("lock-ttl", 15*time.Second, "TTL of the leader's Consul session (at least 10s)")
	lockDelay := fs.Duration("lock-delay", 5*time.Second, "Consul lock delay after a leader's session ends")
	deadAfter := fs.Duration("dead-after", 30*time.Second, "a host failing its liveness check this long is dead: its instances move")
	store := consulFlags(fs)
	logger := logFlags(fs, stderr)
	if positional, err := parseArgs(fs, args); err != nil {
		return flagExit(err)
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync sync: unexpected arguments %q\n", positional)
		return 2
	}
	if *repo == "" || *registry == "" {
		fmt.Fprintln(stderr, "gilliam-sync sync: --repo and --registry are required")
		fs.Usage()
		return 2
	}
	log, err := logger()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync sync:", err)
		return 2
	}
	st, err := store()
	if err != nil {
		log.Error("consul", "err", err)
		return 1
	}
	builds, err := build.NewBuildpacks(build.BuildpacksConfig{Builder: *builder, Registry: *registry, Logger: log.With("component", "build")})
	if err != nil {
		log.Error("build", "err", err)
		return 1
	}
	cfg := sync.Config{
		Repos:   []sync.Repo{{URL: *repo, Ref: *ref, File: *file}},
		DataDir: *data, Interval: *interval, ID: *id, LockTTL: *lockTTL, LockDelay: *lockDelay,
		Logger: log, Failpoint: failpoint(log),
	}
	cfg.Placement.DeadAfter = *deadAfter
	syncer, err := sync.New(cfg, st, builds)
	if err != nil {
		log.Error("sync", "err", err)
		return 1
	}
	if err := syncer.Run(ctx); err != nil {
		log.Error("sync stopped", "err", err)
		return 1
	}
	return 0
}

// failpoint reads GILLIAM_FAILPOINT=pause:STAGE: the daemon then stops at that stage of
// its first pass that reaches it, until killed. It exists for tests of a leader dying at
// the worst moment; nothing sets it in normal use.
func failpoint(log *slog.Logger) func(string) {
	action, stage, ok := strings.Cut(os.Getenv("GILLIAM_FAILPOINT"), ":")
	if !ok || action != "pause" {
		return nil
	}
	return func(at string) {
		if at != stage {
			return
		}
		log.Warn("failpoint: paused", "stage", at)
		for {
			time.Sleep(time.Hour)
		}
	}
}
