package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

var releasesCmd = &command{
	name:    "releases",
	usage:   "FORMATION [SERVICE] [--history] [--output text|json]",
	summary: "list a formation's releases (id, commit, image, created, cause) and what happened to them",
	run:     runReleases,
}

// releaseView is one release as listed: never its env, which may hold secrets.
type releaseView struct {
	ID      string    `json:"id"`
	Service string    `json:"service"`
	Commit  string    `json:"commit"`
	Image   string    `json:"image"`
	Created time.Time `json:"created"`
	Cause   string    `json:"cause"`
	// Marks: running (instances run it), latest (the newest commit's), pinned, canary, failed.
	Marks []string `json:"marks,omitempty"`
}

func runReleases(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	history := fs.Bool("history", false, "print the formation's events instead: deploys, roll-outs, rollbacks, scale and config changes")
	output := fs.String("output", "text", "output format: text or json")
	return manageCommand("releases", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		if len(args) < 1 || len(args) > 2 {
			return usageError{"want FORMATION [SERVICE]"}
		}
		if *output != "text" && *output != "json" {
			return usageError{fmt.Sprintf("--output %q: want text or json", *output)}
		}
		formation, only := args[0], ""
		if len(args) == 2 {
			only = args[1]
		}
		if *history {
			events, err := st.History(ctx, formation)
			if err != nil {
				return err
			}
			var out []state.Event
			for _, e := range events {
				if only == "" || e.Service == only || e.Service == "" {
					out = append(out, e)
				}
			}
			timeline, err := st.Timeline(ctx, formation)
			if err != nil {
				return err
			}
			var tl []state.Timeline
			for _, t := range timeline {
				if only == "" || t.Service == only {
					tl = append(tl, t)
				}
			}
			if *output == "json" {
				return json.NewEncoder(stdout).Encode(historyView{Events: out, Timeline: tl})
			}
			for _, e := range out {
				svc := e.Service
				if svc == "" {
					svc = "-"
				}
				fmt.Fprintf(stdout, "%s  %-10s %s\n", e.Time.Local().Format("2006-01-02 15:04:05"), svc, e.What)
			}
			printTimeline(stdout, tl)
			return nil
		}
		views, err := releaseViews(ctx, st, formation, only)
		if err != nil {
			return err
		}
		if *output == "json" {
			return json.NewEncoder(stdout).Encode(views)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RELEASE\tSERVICE\tCOMMIT\tIMAGE\tCREATED\tCAUSE\t")
		for _, v := range views {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(v.ID), v.Service, short(v.Commit), shortImage(v.Image),
				v.Created.Local().Format("2006-01-02 15:04:05"), v.Cause, strings.Join(v.Marks, ","))
		}
		return tw.Flush()
	})(ctx)
}

func releaseViews(ctx context.Context, st *state.Store, formation, only string) ([]releaseView, error) {
	releases, err := st.Releases(ctx, formation)
	if err != nil {
		return nil, err
	}
	d, _, err := st.Desired(ctx, formation)
	if err != nil {
		return nil, err
	}
	if len(releases) == 0 && d == nil {
		return nil, fmt.Errorf("no formation %q in Consul", formation)
	}
	var views []releaseView
	for _, r := range releases {
		if only != "" && r.Service != only {
			continue
		}
		v := releaseView{ID: r.ID, Service: r.Service, Commit: r.Commit, Image: r.Image, Created: r.Created, Cause: r.Cause}
		if d != nil {
			ds := d.Services[r.Service]
			for _, dep := range ds.Deployments {
				if dep.Release == r.ID && dep.Scale > 0 {
					v.Marks = append(v.Marks, "running")
				}
			}
			if ds.Latest == r.ID {
				v.Marks = append(v.Marks, "latest")
			}
			if ds.Pin != nil && ds.Pin.Release == r.ID {
				v.Marks = append(v.Marks, "pinned")
			}
			if ds.Canary != nil && ds.Canary.Release == r.ID {
				v.Marks = append(v.Marks, "canary")
			}
			if ds.Failed == r.ID {
				v.Marks = append(v.Marks, "failed")
			}
		}
		views = append(views, v)
	}
	return views, nil
}

// shortImage shortens repo@sha256:abcdef... to repo@sha256:abcdef123456.
func shortImage(image string) string {
	repo, digest, ok := strings.Cut(image, "@sha256:")
	if !ok {
		return image
	}
	return repo + "@sha256:" + short(digest)
}
