package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// executor performs the actions Reconcile decides: image resolution in the background,
// Consul writes in check-and-set transactions; and remembers what the next decision must
// know (Memory). On a conflict it stops: the next decision re-reads and re-plans.
type executor struct {
	store   *state.Store
	keys    *keyring
	builder Builder
	// registries checks image references when there is no builder (nil: none).
	registries *build.Registries
	repos      map[string]*gitwatch.Repo // by RepoView.Key, for a build's sources
	log        *slog.Logger
	failpoint  func(string)
	done       func() // an image resolution finished: decide again
	// metrics records what the executor did (nil: nothing); now is its clock, for the
	// deploy timeline's build times.
	metrics *metrics.Metrics
	now     func() time.Time

	mu      stdsync.Mutex
	mem     Memory
	noticed map[string]bool
	work    stdsync.WaitGroup
	// resolutions counts the image resolutions finished, for SyncOnce.
	resolutions atomic.Int64
}

func newExecutor(store *state.Store, keys *keyring, builder Builder, registries *build.Registries, log *slog.Logger, failpoint func(string), done func()) *executor {
	return &executor{store: store, keys: keys, builder: builder, registries: registries, repos: map[string]*gitwatch.Repo{}, log: log, failpoint: failpoint, done: done, now: time.Now,
		noticed: map[string]bool{}, mem: Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{},
			Retries: map[string]RetryState{}, Deregistered: map[string]time.Time{}}}
}

// Memory is a copy of what the executor remembers, for the next decision.
func (e *executor) Memory() Memory {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{}, Retries: map[string]RetryState{}, Deregistered: map[string]time.Time{}}
	for k, v := range e.mem.InFlight {
		m.InFlight[k] = v
	}
	for k, v := range e.mem.Images {
		m.Images[k] = v
	}
	for k, v := range e.mem.Retries {
		m.Retries[k] = v
	}
	for k, v := range e.mem.Deregistered {
		m.Deregistered[k] = v
	}
	return m
}

// forget drops what a leader remembered: a new leader reads what was done instead.
func (e *executor) forget() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mem.Images, e.mem.Retries, e.mem.Deregistered = map[string]ImagesOutcome{}, map[string]RetryState{}, map[string]time.Time{}
}

// Apply performs actions in order and says whether it wrote to Consul. It stops at the
// first error: the next decision, on a newer snapshot, decides again.
func (e *executor) Apply(ctx context.Context, actions []Action) (wrote bool, err error) {
	for _, a := range actions {
		w, err := e.apply(ctx, a)
		wrote = wrote || w
		if err != nil {
			if errors.Is(err, state.ErrConflict) {
				e.log.Debug("conflict: deciding again on a newer snapshot", "action", a.String())
			}
			return wrote, fmt.Errorf("%s: %w", a, err)
		}
	}
	return wrote, nil
}

func (e *executor) apply(ctx context.Context, a Action) (bool, error) {
	b := e.store.NewBatch()
	switch a := a.(type) {
	case ResolveImages:
		e.resolve(ctx, a)
		return false, nil
	case Deploy:
		return e.deploy(ctx, a)
	case Advance:
		return e.advance(ctx, a)
	case Place:
		return e.place(ctx, a)
	case DeregisterDead:
		return e.deregister(ctx, a)
	case Notice:
		e.notice(a)
		return false, nil
	case Retry:
		if !e.retry(b, a) {
			return false, nil
		}
	case Record:
		e.record(b, a)
	case Teardown:
		b.PutDesired(a.Desired, a.Index)
		b.PutStatus(a.Status)
		b.PutObserved(a.Observed)
		e.log.Info("preview torn down", "formation", a.Desired.Formation, "ref", a.Target.Ref, "why", a.Why)
	case DeleteFormation:
		b.DeleteFormation(a.Formation)
		e.log.Info("preview removed: no instance left, keys deleted", "formation", a.Formation)
	case CollectReleases:
		for _, r := range a.Releases {
			b.DeleteRelease(r.Formation, r.ID)
			if r.ConfigDigest != "" {
				b.DeleteSecret(r.Formation, r.ID)
			}
			e.log.Info("release deleted (older than the newest kept)", "formation", r.Formation, "service", r.Service, "release", r.ID)
		}
	case Seal:
		e.sealProblems(sealTo(b, e.keys.rootKey(), a.Put))
		for _, p := range a.Drop {
			b.DeleteSealed(p.Host, p.Release)
		}
		e.log.Info("config vars sealed to hosts", "written", len(a.Put), "removed", len(a.Drop))
	default:
		return false, fmt.Errorf("unknown action %T", a)
	}
	return true, e.store.Apply(ctx, b)
}

// deploy writes a target's releases, their sealed config vars and the formation's
// desired state in one transaction.
func (e *executor) deploy(ctx context.Context, a Deploy) (bool, error) {
	b := e.store.NewBatch()
	for _, r := range a.Releases {
		b.PutRelease(r)
	}
	if err := e.putSecrets(b, a); err != nil {
		return false, err
	}
	b.PutDesired(a.Desired, a.Index)
	b.PutStatus(a.Status)
	b.PutObserved(a.Observed)
	if a.Claim != nil {
		b.PutClaim(a.Claim, 0)
	}
	if a.Routes != nil {
		b.PutRoutes(a.Routes)
	}
	if a.Timeline != nil {
		b.PutTimeline(a.Desired.Formation, a.Timeline)
	}
	if err := e.store.Apply(ctx, b); err != nil {
		return false, err
	}
	e.deployed(a)
	e.recovered(a.Target)
	e.log.Info("desired state written", "formation", a.Desired.Formation, "commit", short(a.Target.Commit), "cause", a.Cause, "releases", len(a.Releases))
	e.failpoint("after-desired")
	return true, nil
}

// advance writes a roll-out's step (or only the timeline) and logs its events.
func (e *executor) advance(ctx context.Context, a Advance) (bool, error) {
	b := e.store.NewBatch()
	if a.Timeline != nil {
		b.PutTimeline(a.Desired.Formation, a.Timeline)
	}
	if !a.TimelineOnly {
		b.PutDesired(a.Desired, a.Index)
		b.PutHistory(a.Desired.Formation, a.History, a.HistoryIndex)
	}
	if a.Status != nil {
		b.PutStatus(a.Status)
		e.log.Error("release phase failed; what runs keeps running", "formation", a.Desired.Formation, "err", a.Status.Error)
	}
	if err := e.store.Apply(ctx, b); err != nil {
		return false, err
	}
	for _, ev := range a.Events {
		e.log.Info(ev.What, "formation", a.Desired.Formation, "service", ev.Service)
	}
	e.advanced(a)
	return true, nil
}

// record adds to b what a commit that is not deployed leaves: its status and what was seen.
func (e *executor) record(b *state.Batch, a Record) {
	if a.Refused {
		e.log.Error("commit refused: its formation belongs to another source", "repo", a.Target.RepoURL, "ref", a.Target.Ref, "commit", short(a.Target.Commit), "err", a.Why)
	}
	if a.Status != nil {
		b.PutStatus(a.Status)
		e.log.Error("commit not deployed; what runs keeps running", "repo", a.Target.RepoURL, "ref", a.Target.Ref, "commit", short(a.Target.Commit), "err", a.Why)
	}
	if a.Observed != nil {
		b.PutObserved(a.Observed)
	}
}

// retry remembers when to try a failing target again, and adds its status to b when
// there is one to write (it says whether there is).
func (e *executor) retry(b *state.Batch, a Retry) bool {
	e.mu.Lock()
	e.mem.Retries[a.Target.ID()] = RetryState{Commit: a.Target.Commit, Attempts: a.Attempt, At: a.At}
	e.mu.Unlock()
	if a.Status == nil {
		return false
	}
	e.log.Warn("release failing; retrying with backoff", "repo", a.Target.RepoURL, "ref", a.Target.Ref, "commit", short(a.Target.Commit), "err", a.Err)
	b.PutStatus(a.Status)
	return true
}

// notice logs a notice once per key.
func (e *executor) notice(a Notice) {
	e.mu.Lock()
	seen := e.noticed[a.Key]
	e.noticed[a.Key] = true
	e.mu.Unlock()
	if !seen {
		e.log.Info(a.Message, a.Args...)
	}
}

func (e *executor) place(ctx context.Context, a Place) (bool, error) {
	if a.Report != nil && len(a.Report.Unplaced) > 0 {
		e.log.Warn("instances that cannot be placed", "count", len(a.Report.Unplaced), "first", a.Report.Unplaced[0].Instance+": "+a.Report.Unplaced[0].Reason)
	}
	if len(a.Assignments) > 0 {
		e.failpoint("before-place")
		b := e.store.NewBatch()
		for _, as := range a.Assignments {
			b.PutAssignment(as, a.Indexes[as.Host])
		}
		e.sealProblems(sealTo(b, e.keys.rootKey(), a.Seals))
		for f, v := range a.Volumes {
			b.PutVolumes(v, a.VolumesIndexes[f])
		}
		if err := e.store.Apply(ctx, b); err != nil {
			return false, err
		}
		e.log.Info("assignments written", "hosts", len(a.Assignments), "started", len(a.Start), "stopped", len(a.Stop))
	}
	if a.Report != nil {
		// Apart from the assignments: a report that cannot be written never holds them up.
		b := e.store.NewBatch()
		b.PutPlacementReport(a.Report)
		if err := e.store.Apply(ctx, b); err != nil {
			e.log.Warn("placement report not written", "err", err)
		}
	}
	return true, nil
}

func (e *executor) deregister(ctx context.Context, a DeregisterDead) (bool, error) {
	n, err := e.store.DeregisterHost(ctx, a.Host)
	if err != nil {
		return true, err
	}
	e.mu.Lock()
	e.mem.Deregistered[a.Host] = e.now()
	e.mu.Unlock()
	e.log.Warn("dead host: its registrations removed from the catalog", "host", a.Host, "registrations", n)
	return true, nil
}

// recovered logs the end of a run of failures of a target, and forgets it.
func (e *executor) recovered(t Target) {
	e.mu.Lock()
	r, failing := e.mem.Retries[t.ID()]
	delete(e.mem.Retries, t.ID())
	e.mu.Unlock()
	if failing {
		e.log.Info("release recovered", "repo", t.RepoURL, "ref", t.Ref, "commit", short(t.Commit), "after_attempts", r.Attempts)
	}
}

// resolve finds a target's images in the background and records the outcome.
func (e *executor) resolve(ctx context.Context, a ResolveImages) {
	id := a.Target.ID()
	e.mu.Lock()
	if e.mem.InFlight[id] == a.Target.Commit {
		e.mu.Unlock()
		return
	}
	e.mem.InFlight[id] = a.Target.Commit
	e.mu.Unlock()
	e.work.Add(1)
	go func() {
		defer e.work.Done()
		out := e.images(ctx, a)
		e.mu.Lock()
		if e.mem.InFlight[id] == a.Target.Commit {
			delete(e.mem.InFlight, id)
		}
		if ctx.Err() == nil {
			e.mem.Images[id] = out
		}
		e.mu.Unlock()
		e.resolutions.Add(1)
		e.done()
	}()
}

func (e *executor) images(ctx context.Context, a ResolveImages) ImagesOutcome {
	out := ImagesOutcome{Commit: a.Target.Commit, Images: map[string]string{}, Built: map[string]bool{}, Attempt: a.Attempt, Timings: map[string]BuildTiming{}}
	repo := e.repos[a.Target.Repo]
	for _, req := range a.Requests {
		if req.TreeHash != "" && repo != nil {
			path := a.Services[req.Service].Path
			req.Source = func(dir string) error { return repo.Export(req.Commit, path, dir) }
		}
		var image string
		var err error
		started := e.now()
		switch {
		case e.builder != nil:
			var res build.Result
			res, err = e.builder.Build(ctx, req)
			image, out.Built[req.Service] = res.Image, res.Built
			if err == nil && res.Built {
				e.log.Info("built", "formation", a.Formation, "service", req.Service, "commit", short(req.Commit), "image", res.Image, "took", res.Duration.Round(time.Millisecond))
			}
		case req.TreeHash != "":
			err = errNoBuilder(req.Service)
		case e.registries != nil:
			image, err = e.registries.Resolve(ctx, req.Image)
		default:
			image, err = build.Resolve(ctx, req.Image)
		}
		done := e.now()
		e.metrics.Build(a.Formation, req.Service, buildResult(err, out.Built[req.Service], req.TreeHash != ""), done.Sub(started))
		if err != nil {
			out.Err = fmt.Errorf("service %s: %w", req.Service, err)
			return out
		}
		out.Images[req.Service] = image
		out.Timings[req.Service] = BuildTiming{Started: started, Done: done}
	}
	return out
}

func errNoBuilder(service string) error {
	return fault.Stall(fmt.Errorf("this daemon has no builder to build %s", service))
}

// putSecrets adds to b each new release's config vars, sealed to the root key.
func (e *executor) putSecrets(b *state.Batch, a Deploy) error {
	ids := make([]string, 0, len(a.Secrets))
	for id := range a.Secrets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		root := e.keys.rootKey()
		if root == nil {
			return errors.New("no root key: config vars cannot be sealed")
		}
		sealed, err := seal.SealEnv(root.Public(), a.Secrets[id])
		if err != nil {
			return err
		}
		b.PutSecret(a.Desired.Formation, id, sealed)
	}
	return nil
}

// sealProblems logs, once each, the sealed copies that could not be made.
func (e *executor) sealProblems(problems []string) {
	for _, p := range problems {
		e.mu.Lock()
		seen := e.noticed["seal "+p]
		e.noticed["seal "+p] = true
		e.mu.Unlock()
		if !seen {
			e.log.Error("config vars not sealed to a host: its instances of the release wait", "problem", p)
		}
	}
}

// buildResult names how making an image ended: built, cached (a built service whose image
// the registry had), resolved (an image service's reference), failed or superseded.
func buildResult(err error, built, fromSource bool) string {
	switch {
	case err != nil && fault.KindOf(err) == fault.Superseded:
		return "superseded"
	case err != nil:
		return "failed"
	case built:
		return "built"
	case fromSource:
		return "cached"
	}
	return "resolved"
}

// deployed records a deploy written: its releases, and the first steps of the timeline
// entries it opened.
func (e *executor) deployed(a Deploy) {
	e.metrics.Releases(a.Desired.Formation, a.Cause, len(a.Releases))
	for _, t := range a.Opened {
		if !t.BuildStarted.IsZero() {
			e.metrics.DeployStep(a.Desired.Formation, "queue", t.BuildStarted.Sub(t.Detected))
			e.metrics.DeployStep(a.Desired.Formation, "build", t.Built.Sub(t.BuildStarted))
			e.metrics.DeployStep(a.Desired.Formation, "release", t.Released.Sub(t.Built))
		}
	}
}

// advanced records a roll-out step written: roll-outs ended, releases served.
func (e *executor) advanced(a Advance) {
	f := a.Desired.Formation
	for _, r := range a.Rollouts {
		e.metrics.Rollout(f, r.Service, r.Result, r.Duration)
	}
	for _, t := range a.Served {
		e.metrics.DeployStep(f, "start", t.FirstPassing.Sub(t.Released))
		e.metrics.DeployStep(f, "rollout", t.RolloutDone.Sub(t.FirstPassing))
		if t.Cause == "push" && !t.Detected.IsZero() {
			e.metrics.PushToServing(f, t.RolloutDone.Sub(t.Detected))
		}
		e.log.Info("release serving", "formation", f, "service", t.Service, "release", short(t.Release),
			"after", t.RolloutDone.Sub(t.Detected).Round(time.Millisecond))
	}
}
