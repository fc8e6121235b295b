package sync

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Policy is what the operator set for the control plane's decisions.
type Policy struct {
	KeepReleases int
	MaxPreviews  int
	MaxInstances int // per formation
	Placement    placement.Options
	// Retry is the backoff between attempts at a target that failed in a way retrying can
	// fix (a registry or Consul away).
	Retry fault.Backoff
}

// Memory is what the executor remembers between decisions: the work it has in flight,
// the outcomes of image resolution, and the retries it was told to hold. It is data,
// handed to Reconcile like the world.
type Memory struct {
	InFlight map[string]string        // target ID -> commit whose images are being resolved
	Images   map[string]ImagesOutcome // target ID -> the last resolution's outcome
	Retries  map[string]RetryState    // target ID ->
	// Deregistered are the dead hosts whose registrations were removed from the catalog,
	// and when.
	Deregistered map[string]time.Time
}

// ImagesOutcome is how a ResolveImages ended.
type ImagesOutcome struct {
	Commit string
	Images map[string]string // service -> repository@digest
	Built  map[string]bool   // service -> a build ran
	Err    error
	// Attempt is the number of failures counted before this resolution started.
	Attempt int
	// Timings are when each service's image began and ended being made: the deploy
	// timeline's build started and built.
	Timings map[string]BuildTiming
}

// RetryState is a target held back after consecutive retryable failures.
type RetryState struct {
	Commit   string
	Attempts int
	At       time.Time // not before
}

// Input is everything Reconcile decides from.
type Input struct {
	World  *World
	Memory Memory
	Policy Policy
}

// Decision is what to do now, and when to decide again at the latest if nothing changes
// before (zero: only on a change).
type Decision struct {
	Actions []Action
	Wake    time.Time
}

func (d *Decision) add(a ...Action) { d.Actions = append(d.Actions, a...) }

func (d *Decision) wakeAt(t time.Time) {
	if d.Wake.IsZero() || t.Before(d.Wake) {
		d.Wake = t
	}
}

// Reconcile is the control plane's decision, a pure function of what is (the world), what
// the executor remembers and the operator's policy: which commits need images, which
// releases to write and deploy, the next step of every roll-out, previews to tear down,
// releases to collect, where every instance runs, dead hosts to clean from the catalog,
// and for every failure whether to retry (when) or stall until a person acts.
//
// A formation whose desired state is written in this decision is not also advanced or
// placed in it: the next decision, on the snapshot that holds the write, does that.
func Reconcile(in Input) Decision {
	var d Decision
	touched := map[string]bool{}
	for _, repo := range in.World.Repos {
		for _, t := range repo.Targets {
			decideTarget(in, t, &d, touched)
		}
		decideGoneRefs(in, repo, &d, touched)
	}
	decideRollouts(in, &d, touched)
	decideTeardowns(in, &d, touched)
	decideReleaseGC(in, &d, touched)
	if len(touched) == 0 {
		decidePlacement(in, &d)
		if !slices.ContainsFunc(d.Actions, func(a Action) bool { _, place := a.(Place); return place && len(a.(Place).Assignments) > 0 }) {
			decideSeals(in, &d)
		}
	}
	decideDeadHosts(in, &d)
	return d
}

// decideTarget decides what a target's commit needs: nothing (handled already), images,
// a deploy of the images it has, a record of why it cannot deploy, or a teardown of its
// preview past its time.
func decideTarget(in Input, t Target, d *Decision, touched map[string]bool) {
	w, now := in.World, in.World.Now
	obs := observedOf(w.KV, t.Repo)
	ot, seen := obs.Targets[t.Key()]
	if t.Commit == "" || (seen && ot.Commit == t.Commit && ot.TornDown) {
		return
	}
	if t.Denied != "" {
		d.add(Notice{Key: "denied " + t.ID() + " " + t.Commit, Message: "no preview: the watch list's policy refuses it", Args: []any{"repo", t.RepoURL, "ref", t.Ref, "why", t.Denied}})
		return
	}
	cause := "push"
	refused := seen && ot.Commit == t.Commit && ot.Error != "" // tried again: the name may have been transferred
	if seen && ot.Commit == t.Commit && !refused {
		if ot.Formation == "" || !configChanged(w.KV, ot.Formation) {
			decidePreviewTTL(in, t, ot, d, touched)
			return
		}
		cause = "config"
	}
	src := t.Source
	if src == nil {
		return // not read yet
	}
	if r := in.Memory.Retries[t.ID()]; r.Commit == t.Commit && now.Before(r.At) {
		d.wakeAt(r.At)
		return
	}
	if src.Err != nil {
		failed(in, t, ot.Formation, fmt.Errorf("commit %s: %w", short(t.Commit), src.Err), d)
		return
	}
	f := src.Formation
	name := formationName(t, f)
	if !admissible(in, t, name, f, d) {
		return
	}
	if t.preview() && (ot.Formation == "" || ot.TornDown) && activePreviews(w.KV) >= in.Policy.MaxPreviews {
		d.add(Notice{Key: "preview cap " + t.ID(), Message: "no preview: the cap of previews alive at once is reached", Args: []any{"ref", t.Ref, "max", in.Policy.MaxPreviews}})
		return
	}
	if in.Memory.InFlight[t.ID()] == t.Commit {
		return
	}
	out, ok := in.Memory.Images[t.ID()]
	attempts := 0 // failures counted so far for this commit
	if r := in.Memory.Retries[t.ID()]; r.Commit == t.Commit {
		attempts = r.Attempts
	}
	counted := out.Err != nil && fault.KindOf(out.Err) == fault.Retryable && out.Attempt < attempts
	if !ok || out.Commit != t.Commit || counted {
		d.add(resolveImages(t, name, f, src, cause, attempts))
		return
	}
	if out.Err != nil {
		failed(in, t, name, out.Err, d)
		return
	}
	if err := w.ConfigErr[name]; err != nil {
		failed(in, t, name, err, d)
		return
	}
	if err := w.ConfigErr[nameOf(t, f)]; t.preview() && err != nil { // a preview's base's are its too
		failed(in, t, name, err, d)
		return
	}
	d.add(deploy(in, t, name, cause, out))
	touched[name] = true
}

// admissible says whether a target's formation may deploy at all: its name is its own, its
// domains are not another's, its scale is within the installation's limit and its service
// names clash with no other's. When it may not, the refusal or stall is decided in d.
func admissible(in Input, t Target, name string, f *schema.Formation, d *Decision) bool {
	w := in.World
	if c := w.KV.Claims[nameOf(t, f)]; c != nil && (c.Repo != t.Repo || c.File != t.File) {
		refuse(in, t, fmt.Errorf("commit %s: formation %s belongs to %s (file %s); %s's %s may not deploy it: rename the formation, or move it with `gilliam-sync formations transfer %s --to %s`",
			short(t.Commit), c.Formation, c.URL, c.File, t.RepoURL, t.File, c.Formation, t.RepoURL), d)
		return false
	}
	if owner := domainOwner(w.KV, name, routesOf(t, name, f)); owner != "" {
		stall(in, t, name, fmt.Errorf("commit %s: %s", short(t.Commit), owner), d)
		return false
	}
	if n := totalScale(t, f); n > in.Policy.MaxInstances {
		stall(in, t, name, fmt.Errorf("commit %s: formation %s asks for %d instances, over this installation's limit of %d (limits.instances_per_formation in gilliam-sync.yml): lower the scales",
			short(t.Commit), name, n, in.Policy.MaxInstances), d)
		return false
	}
	if conflict := state.ServiceNameConflict(name, f.ServiceNames(), serviceNames(w.KV)); conflict != "" {
		stall(in, t, name, fmt.Errorf("commit %s: %s", short(t.Commit), conflict), d)
		return false
	}
	return true
}

// failed decides what an image resolution's error means: drop it (superseded), record it
// (stalled), or retry it after a backoff.
func failed(in Input, t Target, formation string, err error, d *Decision) {
	switch fault.KindOf(err) {
	case fault.Superseded:
		return
	case fault.Stalled:
		stall(in, t, formation, err, d)
		return
	}
	r := in.Memory.Retries[t.ID()]
	if r.Commit != t.Commit {
		r = RetryState{Commit: t.Commit}
	}
	r.Attempts++
	a := Retry{Target: t, Attempt: r.Attempts, At: in.Policy.Retry.After(t.ID(), r.Attempts, in.World.Now), Err: err.Error()}
	if r.Attempts == 1 {
		a.Status = failureStatus(in.World, t, formation, err)
	}
	d.add(a)
	d.wakeAt(a.At)
}

// stall records a commit that cannot deploy until a person changes it: the status says
// why (once), and the observed record moves on, so the same commit is not tried again.
func stall(in Input, t Target, formation string, err error, d *Decision) {
	obs := observedOf(in.World.KV, t.Repo)
	rec := Record{Target: t, Why: err.Error(), Stalled: true,
		Observed: withTarget(obs, t, func(o *state.ObservedTarget) { o.Commit = t.Commit })}
	if st := failureStatus(in.World, t, formation, err); st != nil {
		rec.Status = st
	}
	d.add(rec)
}

// refuse records a commit that may not deploy the formation it names, in its own
// repository's record only: the formation's status belongs to its owner.
func refuse(in Input, t Target, err error, d *Decision) {
	obs := observedOf(in.World.KV, t.Repo)
	if ot := obs.Targets[t.Key()]; ot.Commit == t.Commit && ot.Error == err.Error() {
		return
	}
	d.add(Record{Target: t, Why: err.Error(), Stalled: true, Refused: true,
		Observed: withTarget(obs, t, func(o *state.ObservedTarget) { o.Commit, o.Error = t.Commit, err.Error() })})
}

// failureStatus is the formation status that says err, or nil when it says it already.
func failureStatus(w *World, t Target, formation string, err error) *state.FormationStatus {
	if formation == "" {
		formation = formationName(t, nil)
	}
	st := &state.FormationStatus{Formation: formation, Repo: t.RepoURL, Ref: t.Ref, Commit: t.Commit}
	if prev := w.KV.Status[formation]; prev != nil {
		if prev.Error == err.Error() && prev.Commit == t.Commit {
			return nil
		}
		st.Deployed, st.Preview = prev.Deployed, prev.Preview
	}
	st.Error, st.Updated = err.Error(), w.Now.UTC()
	return st
}

func resolveImages(t Target, formation string, f *schema.Formation, src *Source, cause string, attempt int) ResolveImages {
	a := ResolveImages{Target: t, Formation: formation, Cause: cause, Services: f.Services, Attempt: attempt}
	for _, name := range f.StartOrder() {
		svc := f.Services[name]
		req := build.Request{Formation: formation, Service: name, Kind: svc.Type, Image: svc.Image, Commit: t.Commit}
		if t.preview() {
			req.CacheFrom = nameOf(t, f) // a preview's first build starts from its base's cache
		}
		if svc.Built() {
			req.TreeHash, req.Env = src.Trees[name], build.BuildEnv(svc.Env)
		}
		a.Requests = append(a.Requests, req)
	}
	return a
}

// totalScale is the instances a target's file asks for, previews' scales applied.
func totalScale(t Target, f *schema.Formation) int {
	if t.preview() {
		p := previewOf(*f)
		f = &p
	}
	n := 0
	for _, svc := range f.Services {
		n += svc.Scale
	}
	return n
}

// routesOf is what the router needs of a target's formation: its web service and, for
// the formation itself (never a preview, which would claim its base's names), its domains.
func routesOf(t Target, name string, f *schema.Formation) *state.Routes {
	r := &state.Routes{Formation: name, Web: f.WebService()}
	if !t.preview() {
		r.Domains = f.Domains
	}
	return r
}

// domainOwner says which of r's domains another formation owns already, or "".
func domainOwner(kv *state.Snapshot, name string, r *state.Routes) string {
	for _, d := range r.Domains {
		for f, other := range kv.Routes {
			if f != name && slices.ContainsFunc(other.Domains, func(o string) bool { return strings.EqualFold(o, d) }) {
				return fmt.Sprintf("domain %s is formation %s's already: a domain belongs to one formation; remove it from one gilliam.yml", d, f)
			}
		}
	}
	return ""
}
