package sync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// formationName is the formation a gilliam.yml read at this target deploys as: its name
// (or the one derived from the repository), with -pr-N for a pull request's preview and
// -BRANCH for a branch's.
func (t target) formationName(f *schema.Formation) string {
	name := f.Name
	if name == "" {
		name = schema.DefaultName(t.repo.cfg.URL)
	}
	switch t.kind {
	case gitwatch.RefPullRequest:
		return label(fmt.Sprintf("%s-pr-%d", name, t.pr))
	case gitwatch.RefBranchPreview:
		return label(name + "-" + strings.TrimPrefix(t.ref, "refs/heads/"))
	}
	return name
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

// deploy turns a target's commit into releases, and records them as the services' latest
// in the desired formation; the roll-out itself is advance's. Whatever stops it is reported
// in the formation's status and the log, and what runs keeps running. A stalled commit (an
// invalid gilliam.yml, a failed build: a person must push a fix) is not retried; anything
// else (a registry or Consul away) is, on a later pass. cause is push or config.
func (s *Syncer) deploy(ctx context.Context, t target, cause string) error {
	r := t.repo
	log := s.log.With("repo", gitwatch.Sanitize(r.cfg.URL), "ref", t.ref, "commit", short(t.commit))
	if cause == "push" {
		log.Info("new commit", "file", t.file)
	} else {
		log.Info("config changed: releasing the commit again", "cause", cause)
	}
	obs, err := s.observed(ctx, r)
	if err != nil {
		return err
	}
	r.mu.Lock()
	previous := obs.Targets[t.key()].Formation
	r.mu.Unlock()
	status := &state.FormationStatus{Formation: previous, Repo: gitwatch.Sanitize(r.cfg.URL), Ref: t.ref, Commit: t.commit}
	if status.Formation == "" {
		status.Formation = t.formationName(&schema.Formation{})
	}
	fail := func(err error) error {
		var st *stalled
		stall := errors.As(err, &st)
		log.Error("commit not deployed; what runs keeps running", "err", err, "retry", !stall)
		if prev, perr := s.store.FormationStatus(ctx, status.Formation); perr == nil && prev != nil {
			status.Deployed, status.Preview = prev.Deployed, prev.Preview
		}
		status.Error = err.Error()
		status.Updated = s.cfg.Now().UTC()
		if werr := s.store.PutFormationStatus(ctx, status); werr != nil {
			return werr // retried on a later pass
		}
		if !stall {
			return err
		}
		return s.record(ctx, t, func(o *state.ObservedTarget) { o.Commit = t.commit })
	}

	data, err := r.w.Repo().ReadFile(t.commit, t.file)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: %w", short(t.commit), err)})
	}
	f, err := schema.Parse(t.file, data)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: invalid %s:\n%w", short(t.commit), t.file, err)})
	}
	if t.preview() && !f.Previews.Enabled {
		s.once("previews off "+t.inflight(), func() {
			log.Info("no preview: previews are off in this gilliam.yml", "file", t.file)
		})
		return s.record(ctx, t, func(o *state.ObservedTarget) { o.Commit = t.commit })
	}
	status.Formation = t.formationName(f)
	log = log.With("formation", status.Formation)
	if t.preview() {
		applyPreviewOverrides(f)
		status.Preview = &state.Preview{Of: targetOf(f, r), PR: t.pr, TTL: f.Previews.TTL, Updated: s.cfg.Now().UTC()}
		if t.kind == gitwatch.RefBranchPreview {
			status.Preview.Branch = strings.TrimPrefix(t.ref, "refs/heads/")
		}
	}
	for _, name := range f.ServiceNames() {
		// Instances register in Consul as <formation>-<service>, which DNS lookups of
		// <name>.service.consul need to be one label.
		if n := len(status.Formation) + 1 + len(name); n > 63 {
			return fail(&stalled{fmt.Errorf("commit %s: service %s of formation %s: the Consul service name %s-%s is %d characters, over DNS's 63: shorten the formation or service name",
				short(t.commit), name, status.Formation, status.Formation, name, n)})
		}
	}
	config, configIndex, err := s.store.Config(ctx, status.Formation)
	if err != nil {
		return err
	}

	latest := map[string]*state.Release{}
	for _, name := range f.StartOrder() {
		svc := f.Services[name]
		image, err := s.image(ctx, t, status.Formation, svc)
		if errors.Is(err, build.ErrSuperseded) {
			log.Info("release superseded by a newer commit")
			return nil
		}
		if err != nil {
			return fail(err)
		}
		rel := newRelease(status.Formation, svc, image, config, t.commit, cause, s.cfg.Now())
		if err := s.store.PutRelease(ctx, rel); err != nil {
			return err
		}
		log.Info("release written", "service", name, "release", rel.ID, "image", image)
		latest[name] = rel
	}

	_, err = s.store.UpdateDesired(ctx, status.Formation, func(d *state.Desired) error {
		before, _ := json.Marshal(d)
		d.Commit, d.ConfigIndex = t.commit, configIndex
		for name, svc := range f.Services {
			ds := d.Services[name]
			if ds.Latest != latest[name].ID {
				ds.Latest, ds.LatestCause = latest[name].ID, cause
			}
			if ds.FileScale != svc.Scale {
				ds.FileScale, ds.ScaleOverride = svc.Scale, nil // a new file value ends a hand-set scale
			}
			ds.Strategy = state.Strategy{MaxParallel: svc.Rollout.MaxParallel, MinHealthy: svc.Rollout.MinHealthy, Deadline: svc.Rollout.Deadline}
			ds.DependsOn = svc.DependsOn
			ds.Constraints = nil
			for _, c := range svc.Constraints {
				ds.Constraints = append(ds.Constraints, state.Constraint{Key: c.Key, Op: c.Op, Value: c.Value})
			}
			d.Services[name] = ds
		}
		for name := range d.Services {
			if f.Services[name] == nil {
				delete(d.Services, name) // removed from gilliam.yml: its instances stop
			}
		}
		if after, _ := json.Marshal(d); bytes.Equal(after, before) {
			return state.ErrNoChange
		}
		d.Updated = s.cfg.Now().UTC()
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("desired state written", "services", len(latest))
	s.cfg.Failpoint("after-desired")
	status.Deployed, status.Error, status.Updated = t.commit, "", s.cfg.Now().UTC()
	if err := s.store.PutFormationStatus(ctx, status); err != nil {
		return err
	}
	if err := s.record(ctx, t, func(o *state.ObservedTarget) {
		o.Commit, o.Formation, o.Preview, o.TornDown = t.commit, status.Formation, t.preview(), false
	}); err != nil {
		return err
	}
	return s.collectReleases(ctx, status.Formation)
}

// targetOf is the formation a preview previews: the file's name, or the repository's.
func targetOf(f *schema.Formation, r *repoState) string {
	if f.Name != "" {
		return f.Name
	}
	return schema.DefaultName(r.cfg.URL)
}

// applyPreviewOverrides gives a preview formation the scale and env its gilliam.yml asks
// for previews.
func applyPreviewOverrides(f *schema.Formation) {
	for name, o := range f.Previews.Services {
		svc := f.Services[name]
		if svc == nil {
			continue
		}
		if o.Scale != nil {
			svc.Scale = *o.Scale
		}
		for k, v := range o.Env {
			svc.Env[k] = v
		}
	}
}

// image returns the image a service runs at a commit, pinned by digest: built from its
// path (or found built already in the registry), or resolved from its reference.
func (s *Syncer) image(ctx context.Context, t target, formation string, svc *schema.Service) (string, error) {
	req := build.Request{Formation: formation, Service: svc.Name, Kind: svc.Type, Image: svc.Image, Commit: t.commit}
	if svc.Built() {
		if s.builder == nil {
			return "", &stalled{fmt.Errorf("service %s: this daemon has no builder", svc.Name)}
		}
		tree, err := t.repo.w.Repo().TreeHash(t.commit, svc.Path)
		if err != nil {
			return "", &stalled{fmt.Errorf("service %s: path %s: %w", svc.Name, svc.Path, err)}
		}
		req.TreeHash, req.Env = tree, build.BuildEnv(svc.Env)
		req.Source = func(dir string) error { return t.repo.w.Repo().Export(t.commit, svc.Path, dir) }
	} else if s.builder == nil {
		return build.Resolve(ctx, svc.Image)
	}
	res, err := s.builder.Build(ctx, req)
	var failed *build.FailedError
	if errors.As(err, &failed) {
		return "", &stalled{err}
	}
	if err != nil {
		return "", err
	}
	if res.Built {
		s.log.Info("built", "formation", formation, "service", svc.Name, "commit", short(t.commit), "image", res.Image, "took", res.Duration.Round(time.Millisecond))
	}
	return res.Image, nil
}

// newRelease derives a service's release from its gilliam.yml entry, its image and the
// formation's config vars, which override the file's env.
func newRelease(formation string, svc *schema.Service, image string, config map[string]string, commit, cause string, now time.Time) *state.Release {
	env := make(map[string]string, len(svc.Env)+len(config))
	for k, v := range svc.Env {
		env[k] = v
	}
	for k, v := range config {
		env[k] = v
	}
	r := &state.Release{
		Formation: formation, Service: svc.Name, Image: image, Env: env,
		Check: state.Check{Type: svc.Check.Type, Path: svc.Check.Path,
			Interval: svc.Check.Interval, Timeout: svc.Check.Timeout, Grace: svc.Check.Grace},
		Resources: state.Resources{CPU: svc.Resources.CPU, Memory: svc.Resources.Memory},
		Restart:   state.Restart{MinBackoff: svc.Restart.MinBackoff, MaxBackoff: svc.Restart.MaxBackoff},
		Internal:  svc.Internal,
		Commit:    commit, Created: now.UTC(), Cause: cause,
	}
	for _, p := range svc.Ports {
		r.Ports = append(r.Ports, state.Port{Port: p.Port, Name: p.Name})
	}
	switch {
	case svc.Type == schema.TypeImage:
		r.Command = svc.Command
	case len(svc.Command) > 0:
		// A buildpack image runs any command through its launcher, which sets up the
		// buildpacks' environment first.
		r.Entrypoint = []string{"/cnb/lifecycle/launcher", "--"}
		r.Command = svc.Command
	case svc.Process != "" && svc.Process != schema.DefaultProcess:
		r.Entrypoint = []string{"/cnb/process/" + svc.Process}
	}
	r.ID = r.ComputeID()
	return r
}

// stalled marks an error a person must fix: retrying the same commit cannot succeed.
type stalled struct{ err error }

func (e *stalled) Error() string { return e.err.Error() }
func (e *stalled) Unwrap() error { return e.err }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
