package state

import (
	"context"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// Volumes and release phases: the state a stateful service keeps on its hosts, and the
// one-off tasks that run before a release rolls out.

// Volume is one path of a service kept per instance slot.
type Volume struct {
	Path string `json:"path"`
	Size int64  `json:"size,omitempty"` // bytes expected; 0: not given
}

// Phase is a release's release phase: the command a one-off container of the release
// runs before it rolls out. Entrypoint and Command replace the image's, as for instances.
type Phase struct {
	Entrypoint []string      `json:"entrypoint,omitempty"`
	Command    []string      `json:"command"`
	Timeout    time.Duration `json:"timeout"`
}

// Release phase states.
const (
	PhasePending   = "pending"   // waits for the service's roll-out to be due
	PhaseRunning   = "running"   // its task is assigned to a host
	PhaseSucceeded = "succeeded" // exit 0: the roll-out may start
	PhaseFailed    = "failed"    // the roll-out does not start; the release is marked failed
)

// PhaseRun is the release phase of one release, as the control plane follows it.
type PhaseRun struct {
	Release string    `json:"release"`
	State   string    `json:"state"`
	Task    string    `json:"task,omitempty"` // the task's ID, once running
	Host    string    `json:"host,omitempty"` // where it ran, once reported
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	// ExitCode, Output (its last lines) and Error (why it failed: an exit code, a
	// timeout, a container that could not start) once it ended.
	ExitCode int      `json:"exit_code,omitempty"`
	Output   []string `json:"output,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Task is a one-off container a host runs once, to its end, and reports on: the release
// phase of a release (Kind "release").
type Task struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Release   string `json:"release"`
}

// TaskKindRelease is a release phase's task.
const TaskKindRelease = "release"

// Task states, as a host reports them.
const (
	TaskWaiting = "waiting" // its release or image is not here yet
	TaskRunning = "running"
	TaskExited  = "exited" // ExitCode says how
	TaskFailed  = "failed" // it could not run, or ran past its timeout: Error says why
)

// TaskStatus is a task as its host sees it. A host keeps an ended task's container, so a
// restarted daemon reports the same end, until the task leaves the assignment.
type TaskStatus struct {
	ID       string    `json:"id"`
	Release  string    `json:"release"`
	State    string    `json:"state"`
	ExitCode int       `json:"exit_code,omitempty"`
	Output   []string  `json:"output,omitempty"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Ended    time.Time `json:"ended,omitzero"`
}

// Over says whether the task has ended, either way.
func (t TaskStatus) Over() bool { return t.State == TaskExited || t.State == TaskFailed }

// VolumeStatus is an instance volume as its host sees it.
type VolumeStatus struct {
	Name      string `json:"name"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Index     int    `json:"index"`
	Path      string `json:"path"`
	// Bytes is what the volume uses, -1 when the engine did not say.
	Bytes int64 `json:"bytes"`
}

// FormationVolumes records, per instance slot (names.Slot), the host that holds its
// volumes: the slot's instances run there and nowhere else until a person moves it.
// The leader writes a slot when it first places an instance of it, in the same
// transaction as the assignment.
type FormationVolumes struct {
	Formation string                `json:"formation"`
	Slots     map[string]VolumeSlot `json:"slots"`
}

// VolumeSlot is one instance slot's volumes and their host.
type VolumeSlot struct {
	Service string    `json:"service"`
	Index   int       `json:"index"`
	Host    string    `json:"host"`
	Paths   []Volume  `json:"paths"`
	Created time.Time `json:"created"`
	// Moved is set by `gilliam-sync volumes move`: the slot's next instance goes where
	// placement puts it, and starts with empty volumes there.
	Moved time.Time `json:"moved,omitzero"`
}

// VolumeNames are the Docker volumes of a slot on its host.
func (v VolumeSlot) VolumeNames(formation string) []string {
	out := make([]string, 0, len(v.Paths))
	for _, p := range v.Paths {
		out = append(out, names.Volume(v.Host, formation, v.Service, v.Index, p.Path))
	}
	return out
}

func (s *Store) volumesKey(formation string) string { return s.prefix + "volumes/" + formation }

// VolumesIndex is the ModifyIndex of a formation's volume records, 0 when none.
func (s *Snapshot) VolumesIndex(formation string) uint64 {
	return s.indexes[s.store.volumesKey(formation)]
}

// PutVolumes writes a formation's volume records if their ModifyIndex is still index.
func (b *Batch) PutVolumes(v *FormationVolumes, index uint64) {
	b.put(b.store.volumesKey(v.Formation), v, ptr(index))
}

// Volumes reads a formation's volume records (empty when none) and their ModifyIndex.
func (s *Store) Volumes(ctx context.Context, formation string) (*FormationVolumes, uint64, error) {
	v := &FormationVolumes{Formation: formation}
	_, index, err := s.get(ctx, s.volumesKey(formation), v)
	if v.Slots == nil {
		v.Slots = map[string]VolumeSlot{}
	}
	return v, index, err
}
