package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

var planCmd = &command{
	name:    "plan",
	usage:   "--repo URL|PATH [--commit SHA | --ref main] [flags]",
	summary: "dry run: what deploying a commit would build, release, start and stop; changes nothing",
	run:     runPlan,
}

func runPlan(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	repo := addRepoFlags(fs, 0)
	commit := fs.String("commit", "", "the commit to plan (default: the head of --ref)")
	registry := fs.String("registry", "127.0.0.1:5000", "registry the images are published to, where built images are looked for")
	builder := fs.String("builder", build.DefaultBuilder, "buildpack builder image (its ID is part of an image's source tag)")
	output := fs.String("output", "text", "output format: text or json")
	keySrc := rootKeyFlag(fs, ": it opens config vars, which release IDs depend on; without it a formation with config vars plans no deploy")
	return manageCommand("plan", fs, args, stderr, func(ctx context.Context, store *state.Store, positional []string) error {
		if len(positional) > 0 || *repo.url == "" {
			return usageError{"want --repo URL|PATH"}
		}
		if *output != "text" && *output != "json" {
			return usageError{fmt.Sprintf("--output %q: want text or json", *output)}
		}
		tmp, err := os.MkdirTemp("", "gilliam-plan-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cfg := repo.config()
		cache, err := gitwatch.Open(cfg.URL, filepath.Join(tmp, "repo"), nil)
		if err != nil {
			return err
		}
		head := gitwatch.FullRef(*repo.ref)
		if err := cache.Fetch(ctx, head); err != nil {
			return err
		}
		if *commit == "" {
			if *commit, err = cache.Resolve(head); err != nil || *commit == "" {
				return fmt.Errorf("%s has no %s: %v", gitwatch.Sanitize(cfg.URL), head, err)
			}
		}
		b, err := build.New(build.Config{Registry: *registry, Builder: *builder, DataDir: filepath.Join(tmp, "build")})
		if err != nil {
			return err
		}
		defer b.Close()
		root, _, err := keySrc.load("")
		if err != nil {
			root = nil // planned without config vars: the plan says so for a formation that has some
		}
		plan, err := sync.Plan(ctx, store, root, b, cache, *repo.ref, *repo.file, cfg.Files, *commit, time.Now(), sync.Config{}.Policy())
		if err != nil {
			return err
		}
		if *output == "json" {
			return json.NewEncoder(stdout).Encode(plan)
		}
		printPlan(stdout, plan)
		return nil
	})(ctx)
}

func printPlan(w io.Writer, p *sync.PlanResult) {
	fmt.Fprintf(w, "plan for formation %s at %s (nothing was changed):\n", p.Formation, short(p.Commit))
	if p.Error != "" {
		fmt.Fprintf(w, "  not deployed: %s\n", p.Error)
	}
	for _, s := range p.Services {
		fmt.Fprintf(w, "  %s: %s\n", s.Name, s.Action)
		if s.Release != "" && s.Release != s.Running {
			fmt.Fprintf(w, "      release %s, image %s\n", short(s.Release), shortImage(s.Image))
		}
	}
	moves := func(verb string, as []state.Assignment) {
		for _, a := range as {
			var ids []string
			for _, i := range a.Instances {
				ids = append(ids, i.ID)
			}
			fmt.Fprintf(w, "  %s on %s: %s\n", verb, a.Host, strings.Join(ids, ", "))
		}
	}
	if len(p.Start)+len(p.Stop)+len(p.Unplaced) > 0 {
		fmt.Fprintln(w, "placement once settled (new instances start before old ones stop):")
	}
	moves("start", p.Start)
	moves("stop ", p.Stop)
	for _, u := range p.Unplaced {
		fmt.Fprintf(w, "  cannot place %s: %s\n", u.Instance, u.Reason)
	}
	if len(p.Actions) > 0 {
		fmt.Fprintln(w, "the leader's decisions, in order:")
		for _, a := range p.Actions {
			fmt.Fprintf(w, "  - %s\n", a)
		}
	}
}
