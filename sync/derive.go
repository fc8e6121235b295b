package sync

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// deploy derives a target's releases from its gilliam.yml, its images and the
// formation's config vars, and the desired formation that names them as the services'
// latest; the roll-out itself is a later decision's.
func deploy(in Input, t Target, name, cause string, out ImagesOutcome) Action {
	w := in.World
	f := *t.Source.Formation
	if t.preview() {
		f = previewOf(f)
	}
	base := "" // the formation a preview previews: its config vars are the preview's too
	if t.preview() {
		base = nameOf(t, t.Source.Formation)
	}
	var fresh []*state.Release
	secrets := map[string]map[string]string{}
	latest := map[string]string{}
	for _, svcName := range f.StartOrder() {
		image := out.Images[svcName]
		if image == "" {
			image = "(no image)"
		}
		config := serviceConfig(w.Config, name, base, f.Previews.Services[svcName])
		rel := newRelease(name, f.Services[svcName], siblingsOf(&f, svcName), image, config, w.ReleaseIDKey, t.Commit, cause, w.Now)
		if w.KV.Releases[name][rel.ID] == nil {
			fresh = append(fresh, rel)
		}
		if rel.ConfigDigest != "" && w.KV.Secrets[name][rel.ID] == "" {
			secrets[rel.ID] = config
		}
		latest[svcName] = rel.ID
	}
	desired := nextDesired(w.KV.Desired[name], name, &f, latest, cause, t.Commit, configIndex(w.KV, name, base))
	if desired != nil {
		desired.Updated = w.Now.UTC()
	}
	status := &state.FormationStatus{Formation: name, Repo: t.RepoURL, Ref: t.Ref, Commit: t.Commit, Deployed: t.Commit, Updated: w.Now.UTC()}
	if t.preview() {
		status.Preview = &state.Preview{Of: nameOf(t, t.Source.Formation), PR: t.PR, TTL: f.Previews.TTL, Updated: w.Now.UTC()}
		if t.Kind == gitwatch.RefBranchPreview {
			status.Preview.Branch = strings.TrimPrefix(t.Ref, "refs/heads/")
		}
	}
	obs := withTarget(observedOf(w.KV, t.Repo), t, func(o *state.ObservedTarget) {
		o.Commit, o.Formation, o.Preview, o.TornDown, o.Error = t.Commit, name, t.preview(), false, ""
	})
	a := Deploy{Target: t, Desired: desired, Index: w.KV.DesiredIndex(name), Releases: fresh, Secrets: secrets, Status: status, Observed: obs, Cause: cause}
	if a.Opened = openTimeline(w.KV.Desired[name], latest, t, cause, out, w.Now); len(a.Opened) > 0 {
		a.Timeline = state.AppendTimeline(w.KV.Timeline[name], a.Opened...)
	}
	if r := routesOf(t, name, t.Source.Formation); !sameRoutes(w.KV.Routes[name], r) {
		r.Updated = w.Now.UTC()
		a.Routes = r
	}
	if base := nameOf(t, t.Source.Formation); w.KV.Claims[base] == nil {
		a.Claim = &state.Claim{Formation: base, Repo: t.Repo, URL: t.RepoURL, File: t.File, Since: w.Now.UTC()}
	}
	return a
}

// nextDesired is the desired formation with the file's services at their latest
// releases, scale, strategy and constraints; services gone from the file are dropped (their
// instances stop). Deployments and roll-outs are left to advance. It returns the current
// one (a copy) when nothing changes but its commit.
func nextDesired(current *state.Desired, name string, f *schema.Formation, latest map[string]string, cause, commit string, configIndex uint64) *state.Desired {
	d := &state.Desired{Formation: name, Services: map[string]state.DesiredService{}}
	if current != nil {
		b, _ := json.Marshal(current)
		_ = json.Unmarshal(b, d) // a deep copy: the snapshot's stays as read
	}
	if d.Services == nil {
		d.Services = map[string]state.DesiredService{}
	}
	d.Commit, d.ConfigIndex = commit, configIndex
	for svcName, svc := range f.Services {
		ds := d.Services[svcName]
		if ds.Latest != latest[svcName] {
			ds.Latest, ds.LatestCause = latest[svcName], cause
		}
		if ds.FileScale != svc.Scale {
			ds.FileScale, ds.ScaleOverride = svc.Scale, nil // a new file value ends a hand-set scale
		}
		ds.Strategy = state.Strategy{MaxParallel: svc.Rollout.MaxParallel, MinHealthy: svc.Rollout.MinHealthy, Deadline: svc.Rollout.Deadline}
		ds.DependsOn = svc.DependsOn
		ds.Exclusive = len(svc.Volumes) > 0
		ds.ReleasePhase = nextPhase(ds.ReleasePhase, svc, ds.Latest)
		ds.Constraints = nil
		for _, c := range svc.Constraints {
			ds.Constraints = append(ds.Constraints, state.Constraint{Key: c.Key, Op: c.Op, Value: c.Value})
		}
		d.Services[svcName] = ds
	}
	for svcName := range d.Services {
		if f.Services[svcName] == nil {
			delete(d.Services, svcName)
		}
	}
	return d
}

// formationName is the formation a gilliam.yml read at this target deploys as: its name
// (or the one derived from the repository), with -pr-N for a pull request's preview and
// -BRANCH for a branch's. f may be nil (a file that could not be read).
func formationName(t Target, f *schema.Formation) string {
	name := nameOf(t, f)
	switch t.Kind {
	case gitwatch.RefPullRequest:
		return label(fmt.Sprintf("%s-pr-%d", name, t.PR))
	case gitwatch.RefBranchPreview:
		return label(name + "-" + strings.TrimPrefix(t.Ref, "refs/heads/"))
	}
	return name
}

// nameOf is the formation a file names, or the repository's.
func nameOf(t Target, f *schema.Formation) string {
	if f != nil && f.Name != "" {
		return f.Name
	}
	return schema.DefaultName(t.RepoURL)
}

var notLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// label makes s a DNS label: lowercase letters, digits and dashes, at most 63 characters
// (a longer one keeps its start and a hash of the whole).
func label(s string) string {
	s = strings.Trim(notLabel.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:54], "-") + "-" + build.SourceTag(s, "", nil)[4:12]
	}
	return s
}

// previewOf is a formation with the scale and env its gilliam.yml asks for previews. The
// parsed file is shared by every decision: it is copied, never changed.
func previewOf(f schema.Formation) schema.Formation {
	services := make(map[string]*schema.Service, len(f.Services))
	for name, svc := range f.Services {
		c := *svc
		c.Env = make(map[string]string, len(svc.Env))
		for k, v := range svc.Env {
			c.Env[k] = v
		}
		if o, ok := f.Previews.Services[name]; ok {
			if o.Scale != nil {
				c.Scale = *o.Scale
			}
			for k, v := range o.Env {
				c.Env[k] = v
			}
		}
		services[name] = &c
	}
	f.Services = services
	return f
}

// newRelease derives a service's release from its gilliam.yml entry, its image and the
// formation's config vars, which override the file's env. The release names the config
// vars and holds their digest under idKey; their values stay out of it (they are sealed).
// Siblings are the formation's other services its instances reach by name.
func newRelease(formation string, svc *schema.Service, siblings []state.Sibling, image string, config map[string]string, idKey []byte, commit, cause string, now time.Time) *state.Release {
	env := make(map[string]string, len(svc.Env))
	for k, v := range svc.Env {
		if _, secret := config[k]; !secret {
			env[k] = v
		}
	}
	var names []string
	for k := range config {
		names = append(names, k)
	}
	sort.Strings(names)
	r := &state.Release{
		Formation: formation, Service: svc.Name, Image: image, Env: env,
		Config: names, ConfigDigest: seal.Digest(idKey, config),
		Check: state.Check{Type: svc.Check.Type, Path: svc.Check.Path,
			Interval: svc.Check.Interval, Timeout: svc.Check.Timeout, Grace: svc.Check.Grace},
		Resources: state.Resources{CPU: svc.Resources.CPU, Memory: svc.Resources.Memory},
		Restart:   state.Restart{MinBackoff: svc.Restart.MinBackoff, MaxBackoff: svc.Restart.MaxBackoff},
		Internal:  svc.Internal,
		ReadOnly:  svc.ReadOnly,
		Siblings:  siblings,
		Commit:    commit, Created: now.UTC(), Cause: cause,
	}
	for _, p := range svc.Ports {
		r.Ports = append(r.Ports, state.Port{Port: p.Port, Name: p.Name})
	}
	switch {
	case svc.Type == schema.TypeImage || svc.Type == schema.TypeDockerfile:
		// An image's own entrypoint runs the command; only buildpack images have a launcher.
		r.Command = svc.Command
	case len(svc.Command) > 0:
		// A buildpack image runs any command through its launcher, which sets up the
		// buildpacks' environment first.
		r.Entrypoint = []string{"/cnb/lifecycle/launcher", "--"}
		r.Command = svc.Command
	case svc.Process != "" && svc.Process != schema.DefaultProcess:
		r.Entrypoint = []string{"/cnb/process/" + svc.Process}
	}
	r.Volumes, r.Phase = statefulOf(svc, r.Entrypoint)
	r.ID = r.ComputeID()
	return r
}

// sameRoutes compares routes but for when they were written.
func sameRoutes(a, b *state.Routes) bool {
	return a != nil && b != nil && a.Web == b.Web && slices.Equal(a.Domains, b.Domains)
}
