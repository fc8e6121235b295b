package sync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// target is one thing to deploy: a commit of a watched ref of a repository, as the main
// formation or as the preview of a pull request.
type target struct {
	repo   *repoState
	ref    string // full ref name
	commit string
	pr     int // the pull request this is a preview of; 0 for the deployed branch
}

// formationName is the formation a gilliam.yml at this target deploys as.
func (t target) formationName(f *schema.Formation) string {
	name := f.Name
	if name == "" {
		name = schema.DefaultName(t.repo.cfg.URL)
	}
	if t.pr > 0 {
		name = fmt.Sprintf("%s-pr-%d", name, t.pr)
	}
	return name
}

// deploy turns a commit into releases, and records them as the services' latest in the
// desired formation; the roll-out itself is advance's. Whatever stops it is reported in
// the formation's status and the log, and what runs keeps running. A stalled commit (an
// invalid gilliam.yml, a failed build: a person must push a fix) is not retried; anything
// else (a registry or Consul away) is, on the next pass. cause is push or config.
func (s *Syncer) deploy(ctx context.Context, t target, cause string) error {
	r := t.repo
	log := s.log.With("repo", gitwatch.Sanitize(r.cfg.URL), "ref", t.ref, "commit", short(t.commit))
	if cause == "push" {
		log.Info("new commit")
	} else {
		log.Info("config changed: releasing the commit again", "cause", cause)
	}
	status := &state.FormationStatus{Formation: r.formations[t.ref], Repo: gitwatch.Sanitize(r.cfg.URL), Ref: t.ref, Commit: t.commit}
	if status.Formation == "" {
		status.Formation = target{repo: r, pr: t.pr}.formationName(&schema.Formation{})
	}
	fail := func(err error) error {
		var st *stalled
		stall := errors.As(err, &st)
		log.Error("commit not deployed; what runs keeps running", "err", err, "retry", !stall)
		if prev, perr := s.store.FormationStatus(ctx, status.Formation); perr == nil && prev != nil {
			status.Deployed = prev.Deployed
		}
		status.Error = err.Error()
		status.Updated = s.cfg.Now().UTC()
		if werr := s.store.PutFormationStatus(ctx, status); werr != nil {
			return werr // retried on the next pass
		}
		if !stall {
			return err
		}
		r.done[t.ref] = t.commit
		return nil
	}

	data, err := r.repo.ReadFile(t.commit, r.cfg.File)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: %w", short(t.commit), err)})
	}
	f, err := schema.Parse(r.cfg.File, data)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: invalid %s:\n%w", short(t.commit), r.cfg.File, err)})
	}
	status.Formation = t.formationName(f)
	r.formations[t.ref] = status.Formation
	log = log.With("formation", status.Formation)
	if t.pr > 0 {
		applyPreviewOverrides(f)
	}
	config, configIndex, err := s.store.Config(ctx, status.Formation)
	if err != nil {
		return err
	}

	latest := map[string]*state.Release{}
	for _, name := range f.StartOrder() {
		svc := f.Services[name]
		image, err := s.image(ctx, r, t.commit, status.Formation, svc)
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
				ds.FileScale, ds.ScaleOverride = svc.Scale, nil // a new file value ends a CLI override
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
	status.Deployed, status.Error, status.Updated = t.commit, "", s.cfg.Now().UTC()
	if err := s.store.PutFormationStatus(ctx, status); err != nil {
		return err
	}
	r.done[t.ref] = t.commit
	return s.collectReleases(ctx, status.Formation)
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
func (s *Syncer) image(ctx context.Context, r *repoState, commit, formation string, svc *schema.Service) (string, error) {
	switch svc.Type {
	case schema.TypeImage:
		return build.Resolve(ctx, svc.Image)
	case schema.TypeBuildpack:
	default:
		return "", &stalled{fmt.Errorf("service %s: %s services are not supported yet", svc.Name, svc.Type)}
	}
	log := s.log.With("formation", formation, "service", svc.Name, "commit", short(commit))
	tree, err := r.repo.TreeHash(commit, svc.Path)
	if err != nil {
		return "", &stalled{fmt.Errorf("service %s: path %s: %w", svc.Name, svc.Path, err)}
	}
	builderID, err := s.builder.BuilderID(ctx)
	if err != nil {
		return "", err
	}
	env := build.BuildEnv(svc.Env)
	tag := build.SourceTag(tree, builderID, env)
	repo := build.Repository(s.builder.Registry(), formation, svc.Name)
	if pinned, found, err := build.Find(ctx, repo, tag); err != nil {
		return "", err
	} else if found {
		log.Info("build skipped: this source was built already", "tree", short(tree), "image", pinned)
		return pinned, nil
	}

	src, err := os.MkdirTemp(filepath.Join(s.cfg.DataDir), "build-"+formation+"-"+svc.Name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	if err := r.repo.Export(commit, svc.Path, src); err != nil {
		return "", fmt.Errorf("service %s: export %s at %s: %w", svc.Name, svc.Path, short(commit), err)
	}
	log.Info("building", "tree", short(tree), "path", svc.Path)
	var out tail
	res, err := s.builder.Build(ctx, build.PackRequest{Formation: formation, Service: svc.Name, Source: src, Tag: tag, Env: env, Log: &out})
	if err != nil && ctx.Err() == nil {
		return "", &stalled{fmt.Errorf("service %s: %w\nbuild log (end):\n%s", svc.Name, err, out.String())}
	} else if err != nil {
		return "", err
	}
	log.Info("built", "image", res.Image, "took", res.Duration.Round(time.Millisecond))
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

// tail keeps the last 4 KiB written to it: the end of a build log, for error reports.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.b)) }

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
