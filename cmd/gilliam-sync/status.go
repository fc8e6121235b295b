package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

var statusCmd = &command{
	name:    "status",
	usage:   "[FORMATION] [--output text|json]",
	summary: "show formations, their releases and every instance's host, state and health, from Consul",
	run:     runStatus,
}

// formationView is what status shows of one formation (and prints as JSON).
type formationView struct {
	Name string `json:"name"`
	// Preview says what a preview formation previews; TearingDown why it is going.
	Preview     *state.Preview `json:"preview,omitempty"`
	TearingDown string         `json:"tearing_down,omitempty"`
	Repo        string         `json:"repo,omitempty"`
	Ref         string         `json:"ref,omitempty"`
	Commit      string         `json:"commit,omitempty"`
	Deployed    string         `json:"deployed,omitempty"`
	Error       string         `json:"error,omitempty"`
	// Forge is how the commit statuses and pull-request comments about the formation
	// stand on its forge (docs/observability.md).
	Forge    []state.ForgeDelivery `json:"forge,omitempty"`
	Services []serviceView         `json:"services"`
	// OneOffs are the one-off processes of the formation there are now (gilliam-sync run).
	OneOffs []oneOffView `json:"one_offs,omitempty"`
}

type serviceView struct {
	Name        string             `json:"name"`
	Deployments []state.Deployment `json:"deployments"`
	Image       string             `json:"image,omitempty"`
	// URLs are where routers serve the service (none when internal, or with no router).
	URLs []string `json:"urls"`
	// Latest is the release of the latest commit; Pinned the release a rollback holds the
	// service on; Failed the last release whose roll-out was reverted.
	Latest string `json:"latest,omitempty"`
	Pinned string `json:"pinned,omitempty"`
	Failed string `json:"failed,omitempty"`
	// Canary is a release run by hand beside the target (gilliam-sync canary).
	Canary  *state.Canary  `json:"canary,omitempty"`
	Rollout *state.Rollout `json:"rollout,omitempty"`
	// Scale is the target; ScaleByHand tells it was set with gilliam-sync scale.
	Scale       int  `json:"scale"`
	ScaleByHand bool `json:"scale_by_hand,omitempty"`
	// ReleasePhase is the latest release's release phase, when it has one.
	ReleasePhase *state.PhaseRun `json:"release_phase,omitempty"`
	Instances    []instanceView  `json:"instances"`
	// Deploy is the deploy timeline of the service's newest release.
	Deploy *state.Timeline `json:"deploy,omitempty"`
}

type instanceView struct {
	ID       string `json:"id"`
	Release  string `json:"release"`
	Host     string `json:"host,omitempty"`
	State    string `json:"state"`
	Health   string `json:"health"`
	Address  string `json:"address,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
	// CrashLoop, ExitCode and Logs tell an instance that keeps exiting: its last code and
	// the last lines it wrote.
	CrashLoop bool     `json:"crash_loop,omitempty"`
	ExitCode  int      `json:"exit_code,omitempty"`
	Logs      []string `json:"logs,omitempty"`
	Error     string   `json:"error,omitempty"`
	// RestartReason is why it last restarted (crash, unhealthy); UnhealthyRestarts how
	// many times its host restarted it for a failing check.
	RestartReason     string `json:"restart_reason,omitempty"`
	UnhealthyRestarts int    `json:"unhealthy_restarts,omitempty"`
}

func runStatus(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	output := fs.String("output", "text", "output format: text or json")
	newStore := consulFlags(fs)
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(positional) > 1 {
		fmt.Fprintln(stderr, "gilliam-sync status: at most one formation")
		return 2
	}
	store, err := newStore()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync status:", err)
		return 1
	}
	only := ""
	if len(positional) == 1 {
		only = positional[0]
	}
	views, err := collectStatus(ctx, store, only)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync status:", err)
		return 1
	}
	oneOffs, err := collectOneOffs(ctx, store, only)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync status:", err)
	}
	for i := range views {
		for _, o := range oneOffs {
			if o.Formation == views[i].Name {
				views[i].OneOffs = append(views[i].OneOffs, o)
			}
		}
	}
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(views)
	case "text":
		printStatus(stdout, views)
		printOneOffs(stdout, oneOffs)
		if only == "" {
			printRefused(ctx, stdout, store)
		}
	default:
		fmt.Fprintf(stderr, "gilliam-sync status: --output %q: want text or json\n", *output)
		return 2
	}
	return 0
}

func collectStatus(ctx context.Context, store *state.Store, only string) ([]formationView, error) {
	names, err := store.Formations(ctx)
	if err != nil {
		return nil, err
	}
	if only != "" {
		names = []string{only}
	}
	assignments, _, err := store.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	report, err := store.PlacementReport(ctx)
	if err != nil {
		return nil, err
	}
	why := map[string]string{}
	for _, u := range report.Unplaced {
		why[u.Instance] = u.Reason
	}
	hostOf := map[string]string{}
	hostStatus := map[string]*state.HostStatus{}
	for h, a := range assignments {
		for _, inst := range a.Instances {
			hostOf[inst.ID] = h
		}
		if st, err := store.HostStatus(ctx, h); err == nil && st != nil {
			hostStatus[h] = st
		}
	}

	// Routers in Consul and the formations' routes give each service its URLs; without
	// them, status still shows the rest.
	listeners, _ := router.Listeners(store.Client())
	routes := map[string]*state.Routes{}
	if rs, _, err := store.WatchRoutes(ctx, 0, 0); err == nil {
		for _, r := range rs {
			routes[r.Formation] = r
		}
	}

	forgeOf := map[string][]state.ForgeDelivery{}
	if r, err := store.ForgeReport(ctx); err == nil {
		for _, d := range r.Deliveries {
			forgeOf[d.Formation] = append(forgeOf[d.Formation], d)
		}
	}

	var views []formationView
	for _, name := range names {
		v := formationView{Name: name, Forge: forgeOf[name]}
		if st, err := store.FormationStatus(ctx, name); err != nil {
			return nil, err
		} else if st != nil {
			v.Repo, v.Ref, v.Commit, v.Deployed, v.Error = st.Repo, st.Ref, st.Commit, st.Deployed, st.Error
			v.Preview, v.TearingDown = st.Preview, st.TearingDown
		}
		d, _, err := store.Desired(ctx, name)
		if err != nil {
			return nil, err
		}
		if d == nil {
			if v.Error == "" && v.Commit == "" {
				return nil, fmt.Errorf("no formation %q in Consul", name)
			}
			views = append(views, v)
			continue
		}
		instances := d.Instances()
		timeline, _ := store.Timeline(ctx, name) // without it, status shows the rest
		var services []string
		for s := range d.Services {
			services = append(services, s)
		}
		sort.Strings(services)
		for _, s := range services {
			ds := d.Services[s]
			sv := serviceView{Name: s, Deployments: ds.Deployments, Latest: ds.Latest, Failed: ds.Failed,
				Rollout: ds.Rollout, Scale: ds.Scale(), ScaleByHand: ds.ScaleOverride != nil, Canary: ds.Canary, ReleasePhase: ds.ReleasePhase}
			if ds.Pin != nil {
				sv.Pinned = ds.Pin.Release
			}
			internal := false
			if deps := sv.Deployments; len(deps) > 0 {
				if rel, err := store.Release(ctx, name, deps[len(deps)-1].Release); err == nil && rel != nil {
					sv.Image, internal = rel.Image, rel.Internal
				}
			}
			web := s == router.WebService
			var domains []string
			if rs := routes[name]; rs != nil {
				web, domains = rs.Web == s || rs.Web == "" && web, rs.Domains
			}
			sv.URLs = router.URLs(listeners, name, s, internal, web, domains)
			sv.Deploy = latestTimeline(timeline, s)
			health := serviceHealth(store.Client(), state.ServiceName(name, s))
			for _, inst := range instances {
				if inst.Service != s {
					continue
				}
				iv := instanceView{ID: inst.ID, Release: inst.Release, Host: hostOf[inst.ID], State: "unplaced", Health: "-"}
				if iv.Host != "" {
					iv.State = "assigned"
				} else if reason, ok := why[inst.ID]; ok {
					iv.Error = "cannot be placed: " + reason
				}
				if hs := hostStatus[iv.Host]; hs != nil {
					for _, is := range hs.Instances {
						if is.ID == inst.ID {
							iv.State, iv.Address, iv.Error = is.State, is.Address, is.Error
							iv.Restarts, iv.CrashLoop, iv.ExitCode, iv.Logs = is.Restarts, is.CrashLoop, is.ExitCode, is.Logs
							iv.RestartReason, iv.UnhealthyRestarts = is.RestartReason, is.UnhealthyRestarts
						}
					}
				}
				if h, ok := health[inst.ID]; ok {
					iv.Health = h
				}
				sv.Instances = append(sv.Instances, iv)
			}
			v.Services = append(v.Services, sv)
		}
		views = append(views, v)
	}
	return views, nil
}

// serviceHealth maps instance ID (from the registrations' meta: a registration's ID also
// names its host) to the aggregated status of its Consul checks.
func serviceHealth(c *api.Client, service string) map[string]string {
	out := map[string]string{}
	entries, _, err := c.Health().Service(service, "", false, nil)
	if err != nil {
		return out
	}
	for _, e := range entries {
		out[e.Service.Meta["instance"]] = e.Checks.AggregatedStatus()
	}
	return out
}

func printStatus(w io.Writer, views []formationView) {
	if len(views) == 0 {
		fmt.Fprintln(w, "no formations yet")
		return
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "formation %s", v.Name)
		if v.Repo != "" {
			fmt.Fprintf(w, "  (%s, %s)", v.Repo, v.Ref)
		}
		fmt.Fprintln(w)
		if p := v.Preview; p != nil {
			of := fmt.Sprintf("pull request %d", p.PR)
			if p.Branch != "" {
				of = "branch " + p.Branch
			}
			fmt.Fprintf(w, "  preview of %s for %s; goes after %s without a new commit (last %s ago)\n",
				p.Of, of, p.TTL, time.Since(p.Updated).Round(time.Second))
		}
		if v.TearingDown != "" {
			fmt.Fprintf(w, "  tearing down: %s\n", v.TearingDown)
		}
		fmt.Fprintf(w, "  commit %s, deployed %s\n", orDash(short(v.Commit)), orDash(short(v.Deployed)))
		if v.Error != "" {
			fmt.Fprintf(w, "  error: commit %s was not deployed; the deployed one keeps running:\n", short(v.Commit))
			for _, line := range strings.Split(v.Error, "\n") {
				fmt.Fprintf(w, "    %s\n", line)
			}
		}
		for _, d := range v.Forge {
			fmt.Fprintf(w, "  forge: %s", d.What)
			if d.Commit != "" {
				fmt.Fprintf(w, " %s on %s", d.State, short(d.Commit))
			}
			switch {
			case d.Error != "":
				fmt.Fprintf(w, ": failing since %s ago (%d attempts): %s\n", time.Since(d.Since).Round(time.Second), d.Attempts, d.Error)
			case d.Delivered:
				fmt.Fprintln(w, ": delivered")
			default:
				fmt.Fprintln(w, ": being delivered")
			}
		}
		for _, s := range v.Services {
			var deps []string
			for _, d := range s.Deployments {
				deps = append(deps, fmt.Sprintf("%s x%d", short(d.Release), d.Scale))
			}
			by := ""
			if s.ScaleByHand {
				by = ", set by hand"
			}
			fmt.Fprintf(w, "  service %s: scale %d%s, running %s\n", s.Name, s.Scale, by, orDash(strings.Join(deps, ", ")))
			if s.Image != "" {
				fmt.Fprintf(w, "    image %s\n", s.Image)
			}
			for _, u := range s.URLs {
				fmt.Fprintf(w, "    url %s\n", u)
			}
			if r := s.Rollout; r != nil {
				fmt.Fprintf(w, "    roll-out (%s) from %s to %s, started %s ago\n", r.Cause, orDash(short(r.From)), short(r.To), time.Since(r.Started).Round(time.Second))
			}
			if s.Deploy != nil {
				fmt.Fprintf(w, "    deploy of %s: %s\n", short(s.Deploy.Release), timelineText(*s.Deploy))
			}
			if c := s.Canary; c != nil {
				fmt.Fprintf(w, "    canary: release %s at scale %d beside the service's own, since %s ago; gilliam-sync canary promote|abort %s %s\n",
					short(c.Release), c.Scale, time.Since(c.Since).Round(time.Second), v.Name, s.Name)
			}
			if s.Pinned != "" {
				fmt.Fprintf(w, "    pinned to %s by a rollback: new commits build but do not deploy (latest %s); gilliam-sync unpin %s %s resumes\n",
					short(s.Pinned), short(s.Latest), v.Name, s.Name)
			}
			if s.Failed != "" && s.Failed == s.Latest {
				fmt.Fprintf(w, "    roll-out of the latest release %s failed and was reverted; push a fix\n", short(s.Failed))
			}
			printPhase(w, s.ReleasePhase)
			if len(s.Instances) == 0 {
				continue
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "    INSTANCE\tHOST\tSTATE\tHEALTH\tRESTARTS\tADDRESS")
			for _, in := range s.Instances {
				state := in.State
				if in.CrashLoop {
					state = fmt.Sprintf("crash-loop (exit %d)", in.ExitCode)
				}
				restarts := fmt.Sprint(in.Restarts)
				if in.UnhealthyRestarts > 0 {
					restarts += fmt.Sprintf(" (%d unhealthy)", in.UnhealthyRestarts)
				}
				fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\t%s\n", in.ID, orDash(in.Host), state, in.Health, restarts, orDash(in.Address))
			}
			tw.Flush()
			for _, in := range s.Instances {
				if in.Error != "" {
					fmt.Fprintf(w, "    %s: %s\n", in.ID, in.Error)
				}
				if in.CrashLoop && len(in.Logs) > 0 {
					fmt.Fprintf(w, "    %s, its last lines:\n", in.ID)
					for _, l := range in.Logs {
						fmt.Fprintf(w, "      %s\n", l)
					}
				}
			}
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// printRefused lists the commits refused before they had a formation of their own: a
// repository naming a formation another source owns.
func printRefused(ctx context.Context, w io.Writer, store *state.Store) {
	snap, err := store.Snapshot(ctx, 0, 0)
	if err != nil {
		return
	}
	var lines []string
	for _, o := range snap.Observed {
		for _, ot := range o.Targets {
			if ot.Error != "" {
				lines = append(lines, fmt.Sprintf("  %s %s at %s: %s", ot.File, ot.Ref, short(ot.Commit), ot.Error))
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	sort.Strings(lines)
	fmt.Fprintln(w, "\nrefused:")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
