package sync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	stdsync "sync"
	"sync/atomic"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// executor performs the actions Reconcile decides: image resolution in the background,
// Consul writes in check-and-set transactions; and remembers what the next decision must
// know (Memory). On a conflict it stops: the next decision re-reads and re-plans.
type executor struct {
	store     *state.Store
	builder   Builder
	repos     map[string]*gitwatch.Repo // by RepoView.Key, for a build's sources
	log       *slog.Logger
	failpoint func(string)
	done      func() // an image resolution finished: decide again

	mu      stdsync.Mutex
	mem     Memory
	noticed map[string]bool
	work    stdsync.WaitGroup
	// resolutions counts the image resolutions finished, for SyncOnce.
	resolutions atomic.Int64
}

func newExecutor(store *state.Store, builder Builder, log *slog.Logger, failpoint func(string), done func()) *executor {
	return &executor{store: store, builder: builder, repos: map[string]*gitwatch.Repo{}, log: log, failpoint: failpoint, done: done,
		noticed: map[string]bool{}, mem: Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{},
			Retries: map[string]RetryState{}, Deregistered: map[string]bool{}}}
}

// Memory is a copy of what the executor remembers, for the next decision.
func (e *executor) Memory() Memory {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{}, Retries: map[string]RetryState{}, Deregistered: map[string]bool{}}
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
	e.mem.Images, e.mem.Retries, e.mem.Deregistered = map[string]ImagesOutcome{}, map[string]RetryState{}, map[string]bool{}
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
		for _, r := range a.Releases {
			b.PutRelease(r)
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
		if err := e.store.Apply(ctx, b); err != nil {
			return false, err
		}
		e.recovered(a.Target)
		e.log.Info("desired state written", "formation", a.Desired.Formation, "commit", short(a.Target.Commit), "cause", a.Cause, "releases", len(a.Releases))
		e.failpoint("after-desired")
		return true, nil
	case Record:
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
	case Retry:
		e.mu.Lock()
		e.mem.Retries[a.Target.ID()] = RetryState{Commit: a.Target.Commit, Attempts: a.Attempt, At: a.At}
		e.mu.Unlock()
		if a.Status == nil {
			return false, nil
		}
		e.log.Warn("release failing; retrying with backoff", "repo", a.Target.RepoURL, "ref", a.Target.Ref, "commit", short(a.Target.Commit), "err", a.Err)
		b.PutStatus(a.Status)
	case Advance:
		b.PutDesired(a.Desired, a.Index)
		b.PutHistory(a.Desired.Formation, a.History, a.HistoryIndex)
		for _, ev := range a.Events {
			e.log.Info(ev.What, "formation", a.Desired.Formation, "service", ev.Service)
		}
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
			e.log.Info("release deleted (older than the newest kept)", "formation", r.Formation, "service", r.Service, "release", r.ID)
		}
	case Place:
		return e.place(ctx, a)
	case DeregisterDead:
		return e.deregister(ctx, a)
	case Notice:
		e.mu.Lock()
		seen := e.noticed[a.Key]
		e.noticed[a.Key] = true
		e.mu.Unlock()
		if !seen {
			e.log.Info(a.Message, a.Args...)
		}
		return false, nil
	default:
		return false, fmt.Errorf("unknown action %T", a)
	}
	return true, e.store.Apply(ctx, b)
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
	var errs []error
	for _, r := range a.Registrations {
		if err := e.store.DeregisterFromCatalog(ctx, r.Node, r.Registration); err != nil {
			errs = append(errs, err)
			continue
		}
		e.mu.Lock()
		e.mem.Deregistered[r.Registration] = true
		e.mu.Unlock()
	}
	e.log.Warn("dead host: its instances' registrations removed from the catalog", "host", a.Host, "registrations", len(a.Registrations))
	return true, errors.Join(errs...)
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
	out := ImagesOutcome{Commit: a.Target.Commit, Images: map[string]string{}, Built: map[string]bool{}, Attempt: a.Attempt}
	repo := e.repos[a.Target.Repo]
	for _, req := range a.Requests {
		if req.TreeHash != "" && repo != nil {
			path := a.Services[req.Service].Path
			req.Source = func(dir string) error { return repo.Export(req.Commit, path, dir) }
		}
		var image string
		var err error
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
		default:
			image, err = build.Resolve(ctx, req.Image)
		}
		if err != nil {
			out.Err = fmt.Errorf("service %s: %w", req.Service, err)
			return out
		}
		out.Images[req.Service] = image
	}
	return out
}

func errNoBuilder(service string) error {
	return fault.Stall(fmt.Errorf("this daemon has no builder to build %s", service))
}
