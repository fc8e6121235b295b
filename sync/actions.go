package sync

import (
	"fmt"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// An Action is one thing Reconcile decided to do. The leader's executor performs it; the
// plan's executor prints it and applies it to a copy of the world. String says it in
// words, for both.
type Action interface{ String() string }

// ResolveImages finds the image of every service of a target's commit: built from its
// path (or found built in the registry), or resolved from its reference. It runs in the
// background; its outcome is in Memory.Images when it is done.
type ResolveImages struct {
	Target    Target
	Formation string
	Cause     string // push or config
	Requests  []build.Request
	Services  map[string]*schema.Service
	Attempt   int // failures counted before it
}

func (a ResolveImages) String() string {
	var names []string
	for _, r := range a.Requests {
		names = append(names, r.Service)
	}
	return fmt.Sprintf("%s: images of %s at %s (%s)", a.Formation, strings.Join(names, ", "), short(a.Target.Commit), a.Cause)
}

// Deploy writes a target's new releases and the desired formation that names them, its
// status and the target's observed commit, in one transaction.
type Deploy struct {
	Target   Target
	Desired  *state.Desired
	Index    uint64 // check-and-set on the desired state
	Releases []*state.Release
	// Secrets are the config vars of the releases that have some and whose sealed copy
	// is not written yet (release ID -> vars): the executor seals them to the root key.
	// They are never printed.
	Secrets  map[string]map[string]string
	Status   *state.FormationStatus
	Observed *state.Observed
	Cause    string
	// Routes is what the router needs of the formation, written when it changed.
	Routes *state.Routes
	// Claim is the formation's claim for this source, written (check-and-set on its
	// absence) when the name had none.
	Claim *state.Claim
	// Timeline is the formation's deploy timeline with the entries this deploy opens
	// (Opened); nil when it opens none.
	Timeline []state.Timeline
	Opened   []state.Timeline
}

func (a Deploy) String() string {
	var rs []string
	for _, r := range a.Releases {
		rs = append(rs, r.Service+"="+short(r.ID))
	}
	return fmt.Sprintf("%s: deploy %s (%s), new releases [%s]", a.Desired.Formation, short(a.Target.Commit), a.Cause, strings.Join(rs, " "))
}

// Record writes a target's status and observed record without deploying: a stalled
// commit (invalid gilliam.yml, failed build) or one that makes no formation.
type Record struct {
	Target   Target
	Status   *state.FormationStatus // nil: unchanged
	Observed *state.Observed        // nil: unchanged
	Why      string
	Stalled  bool
	Refused  bool // the formation is another source's: logged, its status untouched
}

func (a Record) String() string {
	return fmt.Sprintf("%s %s at %s: not deployed: %s", a.Target.RepoURL, a.Target.Ref, short(a.Target.Commit), firstLine(a.Why))
}

// Retry holds a target back until At, after its n-th consecutive retryable failure.
type Retry struct {
	Target  Target
	Attempt int
	At      time.Time
	Err     string
	Status  *state.FormationStatus // written once, when failing starts
}

func (a Retry) String() string {
	return fmt.Sprintf("%s %s at %s: attempt %d failed, next at %s: %s", a.Target.RepoURL, a.Target.Ref, short(a.Target.Commit), a.Attempt, a.At.Format(time.TimeOnly), firstLine(a.Err))
}

// Advance writes a formation's services one step further towards their targets (roll-
// outs, scale) with the events it makes.
type Advance struct {
	Desired      *state.Desired
	Index        uint64
	History      []state.Event
	HistoryIndex uint64
	Events       []state.Event
	// Timeline is the formation's deploy timeline when it changed (nil: unchanged);
	// TimelineOnly says nothing else changed: only it is written.
	Timeline     []state.Timeline
	TimelineOnly bool
	// Served are the timeline entries done in this step, Rollouts the roll-outs that
	// ended: the executor records them as metrics once written.
	Served   []state.Timeline
	Rollouts []RolloutEnd
	// Status says why a release phase failed (nil: unchanged), for status and the
	// commit status.
	Status *state.FormationStatus
}

func (a Advance) String() string {
	if a.TimelineOnly {
		return fmt.Sprintf("%s: deploy timeline", a.Desired.Formation)
	}
	var what []string
	for _, e := range a.Events {
		what = append(what, e.Service+": "+e.What)
	}
	return fmt.Sprintf("%s: %s", a.Desired.Formation, strings.Join(what, "; "))
}

// Teardown empties a preview formation's desired state, so its instances stop, and marks
// it for deletion.
type Teardown struct {
	Target   Target
	Desired  *state.Desired
	Index    uint64
	Status   *state.FormationStatus
	Observed *state.Observed
	Why      string
}

func (a Teardown) String() string {
	return fmt.Sprintf("%s: tear down: %s", a.Desired.Formation, a.Why)
}

// DeleteFormation removes the keys of a formation torn down, once nothing of it runs.
type DeleteFormation struct{ Formation string }

func (a DeleteFormation) String() string {
	return fmt.Sprintf("%s: delete its keys (torn down, no instance left)", a.Formation)
}

// CollectReleases deletes releases no longer kept.
type CollectReleases struct {
	Formation string
	Releases  []*state.Release
}

func (a CollectReleases) String() string {
	return fmt.Sprintf("%s: delete %d old release(s)", a.Formation, len(a.Releases))
}

// Place writes the assignments of the hosts whose instances change, and the placement
// report when it changed.
type Place struct {
	Assignments []*state.Assignment
	Indexes     map[string]uint64
	Report      *state.PlacementReport // nil: unchanged
	Start, Stop []state.Instance
	Hosts       map[string]string // instance ID -> the host it starts on
	StopHosts   map[string]string // instance ID -> the host it stops on
	// Seals are the config vars the new assignments need sealed to their hosts, written
	// in the same transaction: a host never sees an instance without them.
	Seals []SealFor
	// Volumes are the volume records of formations whose slots are placed for the first
	// time (volumes.go), written with the assignments, check-and-set on VolumesIndexes.
	Volumes        map[string]*state.FormationVolumes
	VolumesIndexes map[string]uint64
}

func (a Place) String() string {
	return fmt.Sprintf("place: %d host(s) written, %d instance(s) start, %d stop", len(a.Assignments), len(a.Start), len(a.Stop))
}

// DeregisterDead removes a dead host's instance registrations from the catalog: its agent,
// which would, is gone with it.
type DeregisterDead struct{ Host string }

func (a DeregisterDead) String() string {
	return fmt.Sprintf("host %s is dead: remove its registrations from the catalog", a.Host)
}

// Notice is something to log once (a preview cap reached, previews off).
type Notice struct {
	Key, Message string
	Args         []any
}

func (a Notice) String() string { return a.Message }

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
