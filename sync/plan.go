package sync

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/schema"
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

// Plan works out what deploying a commit of repo (a gilliam.yml at file) would build,
// release, start and stop, reading Consul and the registry but writing nothing.
func Plan(ctx context.Context, store *state.Store, lookup Lookup, repo *gitwatch.Repo, file, commit string, now time.Time) (*PlanResult, error) {
	data, err := repo.ReadFile(commit, file)
	if err != nil {
		return nil, err
	}
	f, err := schema.Parse(file, data)
	if err != nil {
		return nil, err
	}
	name := f.Name
	if name == "" {
		name = schema.DefaultName(repo.URL)
	}
	res := &PlanResult{Formation: name, Commit: commit}
	config, _, err := store.Config(ctx, name)
	if err != nil {
		return nil, err
	}
	current, _, err := store.Desired(ctx, name)
	if err != nil {
		return nil, err
	}
	if current == nil {
		current = &state.Desired{Formation: name, Services: map[string]state.DesiredService{}}
	}

	next := &state.Desired{Formation: name, Services: map[string]state.DesiredService{}}
	planned := map[string]*state.Release{}
	for _, svcName := range f.StartOrder() {
		svc := f.Services[svcName]
		req := build.Request{Formation: name, Service: svcName, Kind: svc.Type, Image: svc.Image, Commit: commit}
		if svc.Built() {
			if req.TreeHash, err = repo.TreeHash(commit, svc.Path); err != nil {
				return nil, fmt.Errorf("service %s: path %s: %w", svcName, svc.Path, err)
			}
			req.Env = build.BuildEnv(svc.Env)
			req.Source = func(string) error { return fmt.Errorf("plan never builds") }
		}
		image, found, err := lookup.Lookup(ctx, req)
		if err != nil {
			return nil, err
		}
		ps := PlannedService{Name: svcName, Build: !found, Image: image}
		if !found {
			image = "(built by the deploy)"
		}
		rel := newRelease(name, svc, image, config, commit, "push", now)
		planned[svcName] = rel
		if found {
			ps.Release = rel.ID
		}
		ds := current.Services[svcName]
		ps.Running = settled(ds.Deployments)
		scale := svc.Scale
		if ds.ScaleOverride != nil && ds.FileScale == svc.Scale {
			scale = *ds.ScaleOverride
		}
		ps.Scale = scale
		target := rel.ID
		switch {
		case ds.Pin != nil:
			target = ds.Pin.Release
			ps.Action = fmt.Sprintf("pinned to %s: the new release would be made but not deployed", short(ds.Pin.Release))
		case ps.Running == "":
			ps.Action = fmt.Sprintf("start at scale %d", scale)
		case found && rel.ID == ps.Running:
			ps.Action = "unchanged"
			if d := ds.Deployments; len(d) == 1 && d[0].Scale != scale {
				ps.Action = fmt.Sprintf("scale %d to %d", d[0].Scale, scale)
			}
		default:
			ps.Action = fmt.Sprintf("roll out a new release, replacing %s, at scale %d", short(ps.Running), scale)
		}
		if ps.Build {
			ps.Action = "build, then " + ps.Action
		}
		res.Services = append(res.Services, ps)
		next.Services[svcName] = state.DesiredService{Deployments: []state.Deployment{{Release: target, Scale: scale}}}
	}
	for svcName := range current.Services {
		if f.Services[svcName] == nil {
			res.Services = append(res.Services, PlannedService{Name: svcName, Running: settled(current.Services[svcName].Deployments),
				Action: "stop: no longer in " + file})
		}
	}

	// Placement of the formation as it would settle, with every other formation as it is.
	hosts, err := store.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	var phosts []placement.Host
	for _, h := range hosts {
		ph := placement.Host{ID: h.ID, Labels: h.Labels, Capacity: placement.Resources{CPU: h.Capacity.CPU, Memory: h.Capacity.Memory}}
		if !h.Passing {
			ph.CriticalSince = now
		}
		phosts = append(phosts, ph)
	}
	formations, err := store.Formations(ctx)
	if err != nil {
		return nil, err
	}
	var desired []placement.Instance
	instances := map[string]state.Instance{}
	for _, other := range formations {
		d := next
		if other != name {
			if d, _, err = store.Desired(ctx, other); err != nil {
				return nil, err
			}
			if d == nil {
				continue
			}
		}
		for _, inst := range d.Instances() {
			rel := planned[inst.Service]
			if other != name || rel == nil || rel.ID != inst.Release {
				if rel, err = store.Release(ctx, other, inst.Release); err != nil || rel == nil {
					return nil, fmt.Errorf("release %s of %s: %v", inst.Release, other, err)
				}
			}
			instances[inst.ID] = inst
			desired = append(desired, placement.Instance{ID: inst.ID, Formation: other, Service: inst.Service, Release: inst.Release,
				Resources: placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory}})
		}
	}
	assigned, _, err := store.Assignments(ctx)
	if err != nil {
		return nil, err
	}
	currentIDs := map[string][]string{}
	for h, a := range assigned {
		for _, i := range a.Instances {
			currentIDs[h] = append(currentIDs[h], i.ID)
		}
	}
	p := placement.Plan(desired, phosts, currentIDs, now, placement.Options{})
	moves := func(ms []placement.Move) []state.Assignment {
		byHost := map[string]*state.Assignment{}
		for _, m := range ms {
			a := byHost[m.Host]
			if a == nil {
				a = &state.Assignment{Host: m.Host}
				byHost[m.Host] = a
			}
			inst, ok := instances[m.Instance.ID]
			if !ok {
				inst = state.Instance{ID: m.Instance.ID}
			}
			a.Instances = append(a.Instances, inst)
		}
		var out []state.Assignment
		for _, a := range byHost {
			out = append(out, *a)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
		return out
	}
	res.Start, res.Stop = moves(p.Start), moves(p.Stop)
	for _, u := range p.Unplaced {
		res.Unplaced = append(res.Unplaced, state.UnplacedInstance{Instance: u.Instance.ID, Formation: u.Instance.Formation,
			Service: u.Instance.Service, Reason: u.Reason})
	}
	return res, nil
}
