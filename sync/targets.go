package sync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// target is one thing to deploy: a commit of a watched ref, read from one of the
// repository's gilliam.yml files, as a formation or as the preview of a pull request or
// branch.
type target struct {
	repo   *repoState
	ref    string // full ref name
	file   string
	commit string
	kind   gitwatch.RefKind
	pr     int // the pull request, for RefPullRequest
}

func (t target) key() string { return t.ref + " " + t.file }
func (t target) preview() bool {
	return t.kind == gitwatch.RefPullRequest || t.kind == gitwatch.RefBranchPreview
}
func (t target) inflight() string { return t.repo.key + " " + t.key() }

// reconcileRepo starts releasing what moved in one repository: its deployed ref, and its
// previews when it has them, each of its gilliam.yml files; and tears down the previews
// whose ref is gone or whose time is up.
func (s *Syncer) reconcileRepo(ctx context.Context, r *repoState) error {
	obs, err := s.observed(ctx, r)
	if err != nil {
		return err
	}
	refs := r.w.Refs()
	var errs []error
	if ref := s.deployRef(r, refs); ref != "" {
		for _, file := range r.cfg.Files {
			errs = append(errs, s.consider(ctx, target{repo: r, ref: ref, file: file, commit: refs[ref], kind: gitwatch.RefDeployed}, obs))
		}
	}
	for _, ref := range sortedRefs(refs) {
		kind, pr, ok := r.w.Classify(ref)
		if !ok || kind == gitwatch.RefDeployed {
			continue
		}
		for _, file := range r.cfg.Files {
			errs = append(errs, s.consider(ctx, target{repo: r, ref: ref, file: file, commit: refs[ref], kind: kind, pr: pr}, obs))
		}
	}
	// A preview whose ref is gone (its pull request closed or merged, its branch deleted) is
	// torn down, but only on the word of a listing that succeeded since this daemon
	// started: a failed listing, or a cache not yet brought up to date, never tears down.
	if !r.w.Polled().IsZero() {
		r.mu.Lock()
		targets := sortedTargets(obs)
		r.mu.Unlock()
		for _, ot := range targets {
			if ot.Preview && !ot.TornDown && ot.Formation != "" && refs[ot.Ref] == "" {
				errs = append(errs, s.teardown(ctx, r, ot, "its ref "+ot.Ref+" is gone: the pull request closed or merged, or the branch was deleted"))
			}
		}
	}
	return errors.Join(errs...)
}

// consider starts releasing a target whose commit (or formation config) is new, and tears
// down a preview whose time is up.
func (s *Syncer) consider(ctx context.Context, t target, obs *state.Observed) error {
	t.repo.mu.Lock()
	ot, seen := obs.Targets[t.key()]
	t.repo.mu.Unlock()
	switch {
	case t.commit == "":
		return nil
	case seen && ot.Commit == t.commit && ot.TornDown:
		return nil // torn down at this commit: only a new commit brings it back
	case !seen || ot.Commit != t.commit:
		if t.preview() && (ot.Formation == "" || ot.TornDown) && s.activePreviews() >= s.cfg.MaxPreviews {
			s.once("preview cap "+t.inflight(), func() {
				s.log.Warn("no preview: the cap of previews alive at once is reached", "ref", t.ref, "max", s.cfg.MaxPreviews)
			})
			return nil
		}
		s.startDeploy(ctx, t, "push")
		return nil
	case ot.Formation == "":
		return nil
	}
	if changed, err := s.configChanged(ctx, ot.Formation); err != nil {
		return err
	} else if changed {
		s.startDeploy(ctx, t, "config")
		return nil
	}
	if !t.preview() {
		return nil
	}
	st, err := s.store.FormationStatus(ctx, ot.Formation)
	if err != nil || st == nil || st.Preview == nil || st.TearingDown != "" {
		return err
	}
	if age := s.cfg.Now().Sub(st.Preview.Updated); age > st.Preview.TTL {
		return s.teardown(ctx, t.repo, ot, fmt.Sprintf("no new commit for %s (its ttl is %s)", age.Round(1e9), st.Preview.TTL))
	}
	return nil
}

// deployRef is the ref whose commit is deployed among the refs that match the repository's
// branches and tags: the one whose commit is newest (by committer date), so a repository
// that deploys tags v* runs the newest tag; ties go to the first by name.
func (s *Syncer) deployRef(r *repoState, refs map[string]string) string {
	var best string
	var bestTime int64
	for _, ref := range sortedRefs(refs) {
		if kind, _, ok := r.w.Classify(ref); !ok || kind != gitwatch.RefDeployed {
			continue
		}
		when, err := r.w.Repo().CommitTime(refs[ref])
		if err != nil {
			continue
		}
		if best == "" || when.UnixNano() > bestTime {
			best, bestTime = ref, when.UnixNano()
		}
	}
	return best
}

// startDeploy releases a target in the background, unless the same commit is being
// released already; a newer commit starts at once (the build queue supersedes the older).
func (s *Syncer) startDeploy(ctx context.Context, t target, cause string) {
	s.mu.Lock()
	if s.inflight[t.inflight()] == t.commit {
		s.mu.Unlock()
		return
	}
	s.inflight[t.inflight()] = t.commit
	s.mu.Unlock()
	s.deploys.Add(1)
	go func() {
		defer s.deploys.Done()
		if err := s.deploy(ctx, t, cause); err != nil && ctx.Err() == nil {
			s.log.Debug("release retried on a later pass", "ref", t.ref, "commit", short(t.commit), "err", err)
		}
		s.mu.Lock()
		if s.inflight[t.inflight()] == t.commit {
			delete(s.inflight, t.inflight())
		}
		s.mu.Unlock()
		s.poke()
	}()
}

// observed returns what was done with a repository's refs, read from Consul once per
// leadership.
func (s *Syncer) observed(ctx context.Context, r *repoState) (*state.Observed, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.observed != nil {
		return r.observed, nil
	}
	o, err := s.store.Observed(ctx, r.key)
	if err != nil {
		return nil, err
	}
	r.observed = o
	return o, nil
}

// record stores what was done with a target.
func (s *Syncer) record(ctx context.Context, t target, update func(*state.ObservedTarget)) error {
	obs, err := s.observed(ctx, t.repo)
	if err != nil {
		return err
	}
	t.repo.mu.Lock()
	ot := obs.Targets[t.key()]
	ot.Ref, ot.File = t.ref, t.file
	update(&ot)
	obs.Targets[t.key()] = ot
	snapshot := *obs
	snapshot.Targets = make(map[string]state.ObservedTarget, len(obs.Targets))
	for k, v := range obs.Targets {
		snapshot.Targets[k] = v
	}
	t.repo.mu.Unlock()
	return s.store.PutObserved(ctx, &snapshot)
}

// activePreviews counts the preview formations alive, over every repository.
func (s *Syncer) activePreviews() int {
	n := 0
	for _, r := range s.repos {
		r.mu.Lock()
		if r.observed != nil {
			for _, ot := range r.observed.Targets {
				if ot.Preview && !ot.TornDown && ot.Formation != "" {
					n++
				}
			}
		}
		r.mu.Unlock()
	}
	return n
}

// teardown removes a preview formation: its desired state empties, so its instances stop
// and leave the catalog; finishTeardowns deletes its keys once no host runs any of them.
func (s *Syncer) teardown(ctx context.Context, r *repoState, ot state.ObservedTarget, why string) error {
	f := ot.Formation
	if _, err := s.store.UpdateDesired(ctx, f, func(d *state.Desired) error {
		if len(d.Services) == 0 {
			return state.ErrNoChange
		}
		d.Services = map[string]state.DesiredService{}
		d.Updated = s.cfg.Now().UTC()
		return nil
	}); err != nil {
		return err
	}
	st, err := s.store.FormationStatus(ctx, f)
	if err != nil {
		return err
	}
	if st == nil {
		st = &state.FormationStatus{Formation: f}
	}
	st.TearingDown, st.Updated = why, s.cfg.Now().UTC()
	if err := s.store.PutFormationStatus(ctx, st); err != nil {
		return err
	}
	if err := s.record(ctx, target{repo: r, ref: ot.Ref, file: ot.File}, func(o *state.ObservedTarget) { o.TornDown = true }); err != nil {
		return err
	}
	s.log.Info("preview torn down", "formation", f, "ref", ot.Ref, "why", why)
	return nil
}

// finishTeardowns deletes the keys of formations being torn down once no host is assigned
// any of their instances.
func (s *Syncer) finishTeardowns(ctx context.Context) error {
	formations, err := s.store.Formations(ctx)
	if err != nil {
		return err
	}
	var assigned map[string]*state.Assignment
	var errs []error
	for _, f := range formations {
		st, err := s.store.FormationStatus(ctx, f)
		if err != nil || st == nil || st.TearingDown == "" {
			errs = append(errs, err)
			continue
		}
		if assigned == nil {
			if assigned, _, err = s.store.Assignments(ctx); err != nil {
				return err
			}
		}
		if runs(assigned, f) {
			continue
		}
		if err := s.store.DeleteFormation(ctx, f); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("preview removed: no instance left, keys deleted", "formation", f)
	}
	return errors.Join(errs...)
}

func runs(assigned map[string]*state.Assignment, formation string) bool {
	for _, a := range assigned {
		for _, i := range a.Instances {
			if i.Formation == formation {
				return true
			}
		}
	}
	return false
}

// once runs f the first time key is seen.
func (s *Syncer) once(key string, f func()) {
	s.mu.Lock()
	done := s.logged[key]
	s.logged[key] = true
	s.mu.Unlock()
	if !done {
		f()
	}
}

func sortedRefs(refs map[string]string) []string {
	out := make([]string, 0, len(refs))
	for r := range refs {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func sortedTargets(obs *state.Observed) []state.ObservedTarget {
	out := make([]state.ObservedTarget, 0, len(obs.Targets))
	for _, ot := range obs.Targets {
		out = append(out, ot)
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.Compare(out[i].Ref+out[i].File, out[j].Ref+out[j].File) < 0
	})
	return out
}

// configChanged reports whether a formation's config vars changed since its releases were
// derived.
func (s *Syncer) configChanged(ctx context.Context, formation string) (bool, error) {
	_, index, err := s.store.Config(ctx, formation)
	if err != nil {
		return false, err
	}
	d, _, err := s.store.Desired(ctx, formation)
	if err != nil || d == nil || len(d.Services) == 0 {
		return false, err
	}
	return index != d.ConfigIndex, nil
}
