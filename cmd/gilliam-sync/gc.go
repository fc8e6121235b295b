package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/state"
)

var gcCmd = &command{
	name:    "gc",
	usage:   "[--dry-run] [--registry HOST:PORT] [--data DIR] [flags]",
	summary: "remove what builds left that no kept release uses: cache volumes, dangling images, registry images, build logs",
	run:     runGC,
}

func runGC(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	dry := fs.Bool("dry-run", false, "print what would be removed, remove nothing")
	registry := fs.String("registry", "127.0.0.1:5000", "registry images are published to (gilliam-sync up's embedded one by default)")
	data := fs.String("data", defaultBuildData, "the build data directory of the daemon that builds")
	grace := fs.Duration("grace", time.Hour, "spare images built this recently (their release may be on its way) and registry blobs touched this recently")
	allowEmpty := fs.Bool("allow-empty", false, "collect even when Consul holds no formation at all (everything built would go)")
	store := consulFlags(fs)
	logger := logFlags(fs, stderr)
	if positional, err := parseArgs(fs, args); err != nil {
		return flagExit(err)
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync gc: unexpected arguments %q\n", positional)
		return 2
	}
	log, err := logger()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync gc:", err)
		return 2
	}
	st, err := store()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync gc:", err)
		return 1
	}
	live, err := liveBuilds(ctx, st)
	if err != nil {
		// Never collect on a partial picture: what could not be read might be in use.
		fmt.Fprintln(stderr, "gilliam-sync gc: nothing removed:", err)
		return 1
	}
	if len(live.Services) == 0 && !*allowEmpty {
		fmt.Fprintln(stderr, "gilliam-sync gc: nothing removed: Consul holds no formation (wrong --consul or --prefix?); pass --allow-empty if every build should go")
		return 1
	}
	b, err := build.New(build.Config{Registry: *registry, DataDir: *data, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync gc:", err)
		return 1
	}
	defer b.Close()
	g, err := b.GC(ctx, live, build.GCOptions{DryRun: *dry, Grace: *grace})
	printGarbage(stdout, g, *dry)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync gc:", err)
		return 1
	}
	return 0
}

// liveBuilds is what GC must keep, from Consul: the services of every formation's desired
// state, and the image of every release stored. The sync daemon already deletes releases
// beyond its retention (the newest few per service, and any in use), so the releases left
// are the ones kept.
func liveBuilds(ctx context.Context, st *state.Store) (build.Live, error) {
	var live build.Live
	formations, err := st.Formations(ctx)
	if err != nil {
		return live, err
	}
	for _, f := range formations {
		d, _, err := st.Desired(ctx, f)
		if err != nil {
			return live, err
		}
		if d != nil {
			for s := range d.Services {
				live.Services = append(live.Services, build.Service{Formation: f, Service: s})
			}
		}
		releases, err := st.Releases(ctx, f)
		if err != nil {
			return live, err
		}
		for _, r := range releases {
			live.Images = append(live.Images, r.Image)
		}
	}
	return live, nil
}

func printGarbage(w io.Writer, g build.Garbage, dry bool) {
	verb := "removed"
	if dry {
		verb = "would remove"
	}
	line := func(kind, what string) { fmt.Fprintf(w, "%s %-9s %s\n", verb, kind, what) }
	for _, v := range g.Volumes {
		line("volume", v)
	}
	for _, i := range g.Images {
		line("image", i)
	}
	for _, m := range g.Manifests {
		line("registry", m)
	}
	for _, l := range g.Logs {
		line("logs", l)
	}
	if g.Blobs > 0 {
		fmt.Fprintf(w, "registry blobs freed: %d (%.1f MB)\n", g.Blobs, float64(g.BlobBytes)/1e6)
	}
	for _, s := range g.Skipped {
		fmt.Fprintf(w, "skipped %s\n", s)
	}
	if len(g.Volumes)+len(g.Images)+len(g.Manifests)+len(g.Logs) == 0 {
		fmt.Fprintln(w, "nothing to remove")
	}
}
