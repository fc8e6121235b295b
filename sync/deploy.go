package sync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// deploy turns a commit into releases and a desired formation. Whatever stops it is
// reported in the formation's status and the log, and what runs keeps running. A stalled
// commit (an invalid gilliam.yml, a failed build: a person must push a fix) is not retried;
// anything else (a registry or Consul away) is, on the next pass.
func (s *Syncer) deploy(ctx context.Context, r *repoState, commit string) error {
	log := s.log.With("repo", gitwatch.Sanitize(r.cfg.URL), "ref", r.cfg.Ref, "commit", short(commit))
	log.Info("new commit")
	status := &state.FormationStatus{Formation: r.formation, Repo: gitwatch.Sanitize(r.cfg.URL), Ref: r.cfg.Ref, Commit: commit}
	if status.Formation == "" {
		status.Formation = schema.DefaultName(r.cfg.URL)
	}
	if prev, err := s.store.FormationStatus(ctx, status.Formation); err == nil && prev != nil {
		status.Deployed = prev.Deployed
	}
	fail := func(err error) error {
		var st *stalled
		stall := errors.As(err, &st)
		log.Error("commit not deployed; what runs keeps running", "err", err, "retry", !stall)
		status.Error = err.Error()
		status.Updated = s.cfg.Now().UTC()
		if werr := s.store.PutFormationStatus(ctx, status); werr != nil {
			return werr // retried on the next pass
		}
		if !stall {
			return err
		}
		r.done = commit
		return nil
	}

	data, err := r.repo.ReadFile(commit, r.cfg.File)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: %w", short(commit), err)})
	}
	f, err := schema.Parse(r.cfg.File, data)
	if err != nil {
		return fail(&stalled{fmt.Errorf("commit %s: invalid %s:\n%w", short(commit), r.cfg.File, err)})
	}
	if f.Name == "" {
		f.Name = schema.DefaultName(r.cfg.URL)
	}
	if f.Name != status.Formation {
		status.Formation = f.Name
		status.Deployed = ""
		if prev, err := s.store.FormationStatus(ctx, f.Name); err == nil && prev != nil {
			status.Deployed = prev.Deployed
		}
	}
	r.formation = f.Name
	log = log.With("formation", f.Name)

	desired := &state.Desired{Formation: f.Name, Commit: commit, Services: map[string]state.DesiredService{}}
	for _, name := range f.StartOrder() {
		svc := f.Services[name]
		image, err := s.image(ctx, r, commit, f.Name, svc)
		if err != nil {
			return fail(err)
		}
		rel := newRelease(f.Name, svc, image, commit, s.cfg.Now())
		if err := s.store.PutRelease(ctx, rel); err != nil {
			return err
		}
		log.Info("release written", "service", name, "release", rel.ID, "image", image)
		ds := state.DesiredService{Deployments: []state.Deployment{{Release: rel.ID, Scale: svc.Scale}}}
		for _, c := range svc.Constraints {
			ds.Constraints = append(ds.Constraints, state.Constraint{Key: c.Key, Op: c.Op, Value: c.Value})
		}
		desired.Services[name] = ds
	}

	if err := s.writeDesired(ctx, desired); err != nil {
		return err
	}
	log.Info("desired state written", "services", len(desired.Services))
	status.Deployed, status.Error, status.Updated = commit, "", s.cfg.Now().UTC()
	if err := s.store.PutFormationStatus(ctx, status); err != nil {
		return err
	}
	r.done = commit
	return nil
}

// writeDesired replaces a formation's desired state with check-and-set, leaving it alone
// when only the commit differs: the same releases at the same scale need no write.
func (s *Syncer) writeDesired(ctx context.Context, d *state.Desired) error {
	for attempt := 0; attempt < 5; attempt++ {
		old, index, err := s.store.Desired(ctx, d.Formation)
		if err != nil {
			return err
		}
		if old != nil && reflect.DeepEqual(old.Services, d.Services) {
			return nil
		}
		d.Updated = s.cfg.Now().UTC()
		err = s.store.PutDesired(ctx, d, index)
		if !errors.Is(err, state.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("desired state of %s: too many conflicting writes", d.Formation)
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
	res, err := s.builder.Build(ctx, build.Request{Formation: formation, Service: svc.Name, Source: src, Tag: tag, Env: env, Log: &out})
	if err != nil && ctx.Err() == nil {
		return "", &stalled{fmt.Errorf("service %s: %w\nbuild log (end):\n%s", svc.Name, err, out.String())}
	} else if err != nil {
		return "", err
	}
	log.Info("built", "image", res.Image, "took", res.Duration.Round(time.Millisecond))
	return res.Image, nil
}

// newRelease derives a service's release from its gilliam.yml entry and its image.
func newRelease(formation string, svc *schema.Service, image, commit string, now time.Time) *state.Release {
	r := &state.Release{
		Formation: formation, Service: svc.Name, Image: image, Env: svc.Env,
		Check: state.Check{Type: svc.Check.Type, Path: svc.Check.Path,
			Interval: svc.Check.Interval, Timeout: svc.Check.Timeout, Grace: svc.Check.Grace},
		Resources: state.Resources{CPU: svc.Resources.CPU, Memory: svc.Resources.Memory},
		Restart:   state.Restart{MinBackoff: svc.Restart.MinBackoff, MaxBackoff: svc.Restart.MaxBackoff},
		Internal:  svc.Internal,
		Commit:    commit, Created: now.UTC(), Cause: "push",
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
