package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Lookup finds the image a service would run without building it; build.Builder is one.
type Lookup interface {
	Lookup(ctx context.Context, req build.Request) (image string, found bool, err error)
}

var _ Lookup = (*build.Builder)(nil)

// PlanResult is what deploying a commit would do. Nothing is written to get it.
type PlanResult struct {
	Formation string           `json:"formation"`
	Commit    string           `json:"commit"`
	Services  []PlannedService `json:"services"`
	// Start and Stop are the instances that would start and stop once the roll-outs are
	// done, with their hosts; Unplaced the instances no host could take, and why.
	Start    []state.Assignment       `json:"start,omitempty"`
	Stop     []state.Assignment       `json:"stop,omitempty"`
	Unplaced []state.UnplacedInstance `json:"unplaced,omitempty"`
	// Error is why the commit would not deploy (an invalid gilliam.yml, say).
	Error string `json:"error,omitempty"`
	// Actions are the leader's decisions, in order, as the plan applied them.
	Actions []string `json:"actions"`
}

// PlannedService is what would happen to one service.
type PlannedService struct {
	Name string `json:"name"`
	// Build is true when its image is not in the registry: a build would run first, and
	// Release is only known after it.
	Build   bool   `json:"build"`
	Image   string `json:"image,omitempty"`
	Release string `json:"release,omitempty"`
	// Running is the release it runs now; Action says what would change, in words.
	Running string `json:"running,omitempty"`
	Scale   int    `json:"scale"`
	Action  string `json:"action"`
}

// notBuilt stands for the image of a service the deploy would build first.
const notBuilt = "(built by the deploy)"

// Plan is what the leader would do with a commit of repo's ref (a gilliam.yml at file, one
// of the repository's configs):
// Reconcile itself, run on what Consul holds now, with an executor that looks images up
// instead of building them and applies each decision to a copy of the world instead of
// Consul, until nothing is left to decide. Instances are taken to pass their checks at
// once, so roll-outs run to their end. Nothing is written.
//
// root is the installation's root key, which opens the formation's config vars: without it
// (nil) a formation with config vars plans no deploy, and says why.
func Plan(ctx context.Context, store *state.Store, root *seal.Key, lookup Lookup, repo *gitwatch.Repo, ref, file string, configs []string, commit string, now time.Time, policy Policy) (*PlanResult, error) {
	keys := newKeyring(root, nil)
	if err := keys.ensure(ctx, store, now, false); err != nil {
		return nil, err
	}
	obs := newObserver(store, keys, nil, func() time.Time { return now }, slog.New(slog.DiscardHandler), func() {})
	if err := obs.refresh(ctx); err != nil {
		return nil, err
	}
	world := obs.World()
	t := Target{Repo: gitwatch.CacheName(repo.URL), RepoURL: gitwatch.Sanitize(repo.URL), Ref: gitwatch.FullRef(ref), File: file,
		Commit: commit, Kind: gitwatch.RefDeployed, Source: readSource(repo, commit, file, configs)}
	world.Repos = []RepoView{{Key: t.Repo, URL: t.RepoURL, Targets: []Target{t}}}
	res := &PlanResult{Formation: formationName(t, t.Source.Formation), Commit: commit}
	before := world.KV
	dry := &dryRun{world: world, lookup: lookup, res: res, mem: Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{},
		Retries: map[string]RetryState{}, Deregistered: map[string]time.Time{}}}
	world.KV = before.Clone()
	for i := 0; i < 100; i++ {
		dec := Reconcile(Input{World: dry.world, Memory: dry.mem, Policy: policy})
		progressed := false
		for _, a := range dec.Actions {
			res.Actions = append(res.Actions, a.String())
			p, err := dry.apply(ctx, a)
			if err != nil {
				return nil, err
			}
			progressed = progressed || p
		}
		if !progressed {
			break
		}
	}
	res.Start, res.Stop = moves(before.Assignments, dry.world.KV.Assignments, false), moves(before.Assignments, dry.world.KV.Assignments, true)
	dry.describe(before)
	return res, nil
}

// dryRun is the plan's executor.
type dryRun struct {
	world  *World
	lookup Lookup
	mem    Memory
	res    *PlanResult
	images map[string]bool // services whose image would be built
}

// apply performs a decision on the copy of the world, and says whether it changed it.
func (r *dryRun) apply(ctx context.Context, a Action) (bool, error) {
	kv := r.world.KV
	switch a := a.(type) {
	case ResolveImages:
		if err := r.resolve(ctx, a); err != nil {
			return false, err
		}
	case Deploy:
		r.deploy(a)
	case Advance:
		if a.Timeline != nil {
			kv.Timeline[a.Desired.Formation] = a.Timeline
		}
		if a.TimelineOnly {
			break
		}
		kv.Desired[a.Desired.Formation], kv.History[a.Desired.Formation] = a.Desired, a.History
		if a.Status != nil {
			kv.Status[a.Status.Formation] = a.Status
		}
	case Teardown:
		kv.Desired[a.Desired.Formation], kv.Status[a.Status.Formation], kv.Observed[a.Observed.Repo] = a.Desired, a.Status, a.Observed
	case Place:
		r.place(a)
		return len(a.Assignments) > 0, nil
	case Seal:
		r.sealed(a.Put, a.Drop)
	case Record:
		if a.Observed != nil {
			kv.Observed[a.Observed.Repo] = a.Observed
		}
		if a.Status != nil {
			kv.Status[a.Status.Formation] = a.Status
		}
		r.res.Error = a.Why
		return false, nil
	case Retry:
		r.res.Error = a.Err
		return false, nil
	default: // notices, collections, deletions: nothing the plan follows
		return false, nil
	}
	return true, nil
}

// resolve looks up the images a target would use; what is not in the registry would be
// built (the plan never builds).
func (r *dryRun) resolve(ctx context.Context, a ResolveImages) error {
	out := ImagesOutcome{Commit: a.Target.Commit, Images: map[string]string{}}
	r.images = map[string]bool{}
	for _, req := range a.Requests {
		if req.TreeHash != "" {
			req.Source = func(string) error { return errors.New("plan never builds") }
		}
		image, found, err := r.lookup.Lookup(ctx, req)
		if err != nil {
			return fmt.Errorf("service %s: %w", req.Service, err)
		}
		if !found {
			image, r.images[req.Service] = notBuilt, true
		}
		out.Images[req.Service] = image
	}
	r.mem.Images[a.Target.ID()] = out
	return nil
}

// deploy writes a deploy into the copy of the world, its config vars as placeholders.
func (r *dryRun) deploy(a Deploy) {
	kv := r.world.KV
	kv.Desired[a.Desired.Formation] = a.Desired
	if a.Timeline != nil {
		kv.Timeline[a.Desired.Formation] = a.Timeline
	}
	if kv.Releases[a.Desired.Formation] == nil {
		kv.Releases[a.Desired.Formation] = map[string]*state.Release{}
	}
	for _, rel := range a.Releases {
		kv.Releases[rel.Formation][rel.ID] = rel
	}
	for id := range a.Secrets {
		if kv.Secrets[a.Desired.Formation] == nil {
			kv.Secrets[a.Desired.Formation] = map[string]string{}
		}
		kv.Secrets[a.Desired.Formation][id] = sealedInPlan
	}
	kv.Status[a.Status.Formation], kv.Observed[a.Observed.Repo] = a.Status, a.Observed
	if a.Claim != nil {
		kv.Claims[a.Claim.Formation] = a.Claim
	}
	if a.Routes != nil {
		kv.Routes[a.Routes.Formation] = a.Routes
	}
}

// place writes assignments into the copy of the world, where every instance is taken to
// pass its check and every release phase to succeed.
func (r *dryRun) place(a Place) {
	kv := r.world.KV
	for _, as := range a.Assignments {
		kv.Assignments[as.Host] = as
		passTasks(kv, as)
		for _, inst := range as.Instances {
			if _, ok := r.world.PassingSince[inst.ID]; !ok {
				r.world.PassingSince[inst.ID] = r.world.Now.Add(-24 * time.Hour)
			}
		}
	}
	for f, v := range a.Volumes {
		kv.Volumes[f] = v
	}
	if a.Report != nil {
		kv.Placement = a.Report
		r.res.Unplaced = a.Report.Unplaced
	}
	r.sealed(a.Seals, nil)
}

// sealedInPlan stands for a sealed value in the plan's copy of the world: it seals nothing.
const sealedInPlan = "(sealed)"

// sealed records, in the copy of the world, the hosts' sealed copies written and removed.
func (r *dryRun) sealed(put, drop []SealFor) {
	kv := r.world.KV
	for _, p := range put {
		if kv.Sealed[p.Host] == nil {
			kv.Sealed[p.Host] = map[string]*state.SealedEnv{}
		}
		kv.Sealed[p.Host][p.Release] = &state.SealedEnv{Release: p.Release, Recipient: p.Recipient, Box: sealedInPlan}
	}
	for _, p := range drop {
		delete(kv.Sealed[p.Host], p.Release)
	}
}

// describe fills in what happens to each service of the planned formation, from the
// world before and after.
func (r *dryRun) describe(before *state.Snapshot) {
	f := r.res.Formation
	after, current := r.world.KV.Desired[f], before.Desired[f]
	if after == nil {
		return
	}
	if current == nil {
		current = &state.Desired{Services: map[string]state.DesiredService{}}
	}
	names := make([]string, 0, len(after.Services))
	for n := range after.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ds, was := after.Services[n], current.Services[n]
		ps := PlannedService{Name: n, Build: r.images[n], Running: settled(was.Deployments), Scale: ds.Scale()}
		if rel := r.world.KV.Releases[f][ds.Latest]; rel != nil {
			ps.Image = rel.Image
			if !ps.Build {
				ps.Release = rel.ID
			}
		}
		switch {
		case ds.Pin != nil:
			ps.Action = fmt.Sprintf("pinned to %s: the new release would be made but not deployed", short(ds.Pin.Release))
		case ps.Running == "":
			ps.Action = fmt.Sprintf("start at scale %d", ps.Scale)
		case ds.Latest == ps.Running:
			ps.Action = "unchanged"
			if d := was.Deployments; len(d) == 1 && d[0].Scale != ps.Scale {
				ps.Action = fmt.Sprintf("scale %d to %d", d[0].Scale, ps.Scale)
			}
		default:
			ps.Action = fmt.Sprintf("roll out a new release, replacing %s, at scale %d", short(ps.Running), ps.Scale)
		}
		if ps.Build {
			ps.Action = "build, then " + ps.Action
		}
		r.res.Services = append(r.res.Services, ps)
	}
	for n, was := range current.Services {
		if _, ok := after.Services[n]; !ok {
			r.res.Services = append(r.res.Services, PlannedService{Name: n, Running: settled(was.Deployments), Action: "stop: no longer in the file"})
		}
	}
}

// moves are the instances that start (or, with stopped, stop) between two sets of
// assignments, by host.
func moves(before, after map[string]*state.Assignment, stopped bool) []state.Assignment {
	if stopped {
		before, after = after, before
	}
	had := map[string]bool{}
	for h, a := range before {
		for _, i := range a.Instances {
			had[h+" "+i.ID] = true
		}
	}
	var out []state.Assignment
	for h, a := range after {
		m := state.Assignment{Host: h}
		for _, i := range a.Instances {
			if !had[h+" "+i.ID] {
				m.Instances = append(m.Instances, i)
			}
		}
		if len(m.Instances) > 0 {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}
