package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Release is what one service runs: an image pinned by digest plus everything that shapes
// the container. It is immutable and content-addressed: ID is a hash of the runtime content
// (formation, service, image, env, command, ports, check, resources, restart), so the same
// inputs give the same release, and a change of env alone gives a new release without a
// build. The commit is not part of the ID: a commit that does not change a service keeps
// its running release, and Commit records the commit the release first came from.
type Release struct {
	ID        string `json:"id"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Image     string `json:"image"` // repository@sha256:...
	// Env is the file's env: never a config var (those are secrets, and sealed).
	Env map[string]string `json:"env,omitempty"`
	// Config names the formation's config vars the release runs with; their values are in
	// Consul only sealed (secrets/ to the root key, hosts/<h>/sealed/ to each host that runs
	// the release). ConfigDigest is their keyed hash (seal.Digest): it makes a change of a
	// value a new release, and tells nothing of the values to whoever reads the ID.
	Config       []string `json:"config,omitempty"`
	ConfigDigest string   `json:"config_digest,omitempty"`
	// Entrypoint and Command replace the image's when set.
	Entrypoint []string  `json:"entrypoint,omitempty"`
	Command    []string  `json:"command,omitempty"`
	Ports      []Port    `json:"ports,omitempty"` // the first is the primary one
	Check      Check     `json:"check"`
	Resources  Resources `json:"resources"`
	Restart    Restart   `json:"restart"`
	Internal   bool      `json:"internal,omitempty"`
	// ReadOnly makes the container's root filesystem read-only (a tmpfs on /tmp).
	ReadOnly bool `json:"read_only,omitempty"`
	// Siblings are the other services of the formation an instance reaches by name, at
	// the host's proxy (docs/networking.md), sorted by service.
	Siblings []Sibling `json:"siblings,omitempty"`
	// Volumes are the paths kept per instance slot on its host (stateful.go).
	Volumes []Volume `json:"volumes,omitempty"`
	// Phase is the release phase: a command run once, before the release rolls out.
	Phase *Phase `json:"phase,omitempty"`

	// Provenance, not part of the ID.
	Commit  string    `json:"commit"`
	Created time.Time `json:"created"`
	Cause   string    `json:"cause,omitempty"` // push, config, rollback
}

// Port is a container port.
type Port struct {
	Port int    `json:"port"`
	Name string `json:"name,omitempty"`
}

// A Sibling is another service of a release's formation, as its instances reach it: the
// name Service, on each of its ports. Listen is the port the name answers on inside the
// formation: the service's own port, unless a service of the formation earlier by name
// took it (then one from SiblingPortBase up).
type Sibling struct {
	Service string        `json:"service"`
	Ports   []SiblingPort `json:"ports"`
}

// SiblingPort is one port of a sibling: Port in its containers, Listen on its name.
type SiblingPort struct {
	Port   int `json:"port"`
	Listen int `json:"listen"`
}

// SiblingPortBase is where the name ports of services whose own port another sibling took
// start from.
const SiblingPortBase = 20000

// Check is an instance's health check, run by the Consul agent of its host.
type Check struct {
	Type     string        `json:"type"` // http, tcp or none
	Path     string        `json:"path,omitempty"`
	Interval time.Duration `json:"interval"`
	Timeout  time.Duration `json:"timeout"`
	// Grace is how long after start a failing check does not count.
	Grace time.Duration `json:"grace"`
}

// Resources are limits: CPU in millicores, memory in bytes; zero means no limit.
type Resources struct {
	CPU    int64 `json:"cpu,omitempty"`
	Memory int64 `json:"memory,omitempty"`
}

// Restart bounds the backoff between restarts of a crashed instance.
type Restart struct {
	MinBackoff time.Duration `json:"min_backoff"`
	MaxBackoff time.Duration `json:"max_backoff"`
}

// releaseContent is the part of a Release its ID is the hash of, in a fixed field order.
type releaseContent struct {
	Formation  string            `json:"formation"`
	Service    string            `json:"service"`
	Image      string            `json:"image"`
	Env        map[string]string `json:"env"` // encoding/json sorts map keys
	Entrypoint []string          `json:"entrypoint"`
	Command    []string          `json:"command"`
	Ports      []Port            `json:"ports"`
	Check      Check             `json:"check"`
	Resources  Resources         `json:"resources"`
	Restart    Restart           `json:"restart"`
	Internal   bool              `json:"internal"`
	// ReadOnly is left out when false, so releases made before it existed keep their IDs.
	ReadOnly bool `json:"read_only,omitempty"`
	// Likewise the config vars' names and keyed digest.
	Config       []string `json:"config,omitempty"`
	ConfigDigest string   `json:"config_digest,omitempty"`
	// Siblings likewise when empty (a formation of one service).
	Siblings []Sibling `json:"siblings,omitempty"`
	// Volumes and Phase too, for the same reason.
	Volumes []Volume `json:"volumes,omitempty"`
	Phase   *Phase   `json:"phase,omitempty"`
}

// ComputeID returns the content hash a release's ID must be: 20 hex digits of SHA-256, short
// enough to read in a container name and long enough never to collide within a formation.
func (r *Release) ComputeID() string {
	b, err := json.Marshal(releaseContent{
		Formation: r.Formation, Service: r.Service, Image: r.Image, Env: r.Env,
		Entrypoint: r.Entrypoint, Command: r.Command, Ports: r.Ports, Check: r.Check,
		Resources: r.Resources, Restart: r.Restart, Internal: r.Internal, ReadOnly: r.ReadOnly,
		Config: r.Config, ConfigDigest: r.ConfigDigest,
		Siblings: r.Siblings, Volumes: r.Volumes, Phase: r.Phase,
	})
	if err != nil {
		panic(fmt.Sprintf("state: marshal release content: %v", err)) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:10])
}

// Desired is the desired state of one formation: per service, the releases that should run
// and how many instances of each. Normally one release at full scale; during a roll-out, or
// with a pinned rollback, more than one.
type Desired struct {
	Formation string `json:"formation"`
	// Commit is the commit this desired state was derived from.
	Commit   string                    `json:"commit"`
	Services map[string]DesiredService `json:"services"`
	// ConfigIndex is the ModifyIndex of the formation's config vars the releases were
	// derived with: when the config changes, the latest commit is released again.
	ConfigIndex uint64    `json:"config_index,omitempty"`
	Updated     time.Time `json:"updated"`
}

// DesiredService is what should run of one service, where it may run, and how it moves
// from one release to the next. The leader's reconcile loop owns Deployments and Rollout;
// the other fields are its inputs, from the latest commit (Latest, FileScale, Strategy,
// Constraints) and from people (Pin, ScaleOverride).
type DesiredService struct {
	// Deployments is what runs now: one release when settled; during a roll-out the
	// release rolling out is last.
	Deployments []Deployment `json:"deployments"`
	// Constraints on host labels, for placement. They are not part of a release: changing
	// where a service may run does not restart what runs where it still may.
	Constraints []Constraint `json:"constraints,omitempty"`
	// Strategy is the roll-out policy from gilliam.yml; DependsOn the services whose
	// roll-outs finish before this one's starts.
	Strategy  Strategy `json:"strategy"`
	DependsOn []string `json:"depends_on,omitempty"`
	// Rollout is the roll-out in progress; nil when settled.
	Rollout *Rollout `json:"rollout,omitempty"`

	// Latest is the release the latest commit (or config change) derived: the one deployed
	// unless pinned, or unless its roll-out failed (Failed).
	Latest string `json:"latest"`
	// LatestCause says how Latest came: push (a commit) or config (a config var change).
	LatestCause string `json:"latest_cause,omitempty"`
	// Failed is the last release whose roll-out failed and was reverted; it is not rolled
	// out again until a newer release replaces it as Latest.
	Failed string `json:"failed,omitempty"`
	// Pin holds the service on a release (a rollback): new commits build and make
	// releases, but do not deploy until it is lifted.
	Pin *Pin `json:"pin,omitempty"`
	// Canary runs Scale instances of Release beside the service's target, set by hand
	// (`gilliam-sync canary`), outside roll-outs and scale, until promoted (its release
	// becomes Latest and rolls out from its running instances) or aborted.
	Canary *Canary `json:"canary,omitempty"`
	// FileScale is the scale gilliam.yml gives at the latest commit. ScaleOverride is set
	// by `gilliam-sync scale` and holds until FileScale changes.
	FileScale     int  `json:"file_scale"`
	ScaleOverride *int `json:"scale_override,omitempty"`
	// Exclusive says the service's instances hold volumes: a roll-out replaces them (the
	// old instances stop, then the new ones start on the same hosts) rather than overlap.
	Exclusive bool `json:"exclusive,omitempty"`
	// ReleasePhase is the release phase of Latest, when Latest has one: its roll-out
	// waits for it to succeed (stateful.go).
	ReleasePhase *PhaseRun `json:"release_phase,omitempty"`
}

// Strategy says how a new release replaces the running one.
type Strategy struct {
	MaxParallel int           `json:"max_parallel"`
	MinHealthy  time.Duration `json:"min_healthy"`
	Deadline    time.Duration `json:"deadline"`
}

// Rollout is a roll-out in progress: From's instances stop only as To's pass their checks.
type Rollout struct {
	From    string    `json:"from,omitempty"` // "" for a service that ran nothing
	To      string    `json:"to"`
	Started time.Time `json:"started"`
	Cause   string    `json:"cause"` // push, config, rollback, unpin
}

// Canary is a release run at a small scale beside the service's target.
type Canary struct {
	Release string    `json:"release"`
	Scale   int       `json:"scale"`
	Since   time.Time `json:"since"`
}

// Pin is a rollback: the service stays on Release.
type Pin struct {
	Release string    `json:"release"`
	Since   time.Time `json:"since"`
}

// Scale is the number of instances the service should run: the override while it holds,
// else the file's.
func (ds *DesiredService) Scale() int {
	if ds.ScaleOverride != nil {
		return *ds.ScaleOverride
	}
	return ds.FileScale
}

// Target is the release the service should settle on: the pinned one, else the latest
// unless its roll-out failed, else what runs; none when nothing runs and the only
// release failed.
func (ds *DesiredService) Target() string {
	switch {
	case ds.Pin != nil:
		return ds.Pin.Release
	case ds.Latest != "" && ds.Latest != ds.Failed:
		return ds.Latest
	case len(ds.Deployments) > 0:
		if ds.Rollout != nil && ds.Rollout.To != ds.Latest && ds.Rollout.To != ds.Failed {
			return ds.Rollout.To // the latest failed before it rolled out (its release phase): what rolls out goes on
		}
		if ds.Rollout != nil && ds.Rollout.From != "" {
			return ds.Rollout.From
		}
		return ds.Deployments[0].Release
	}
	if ds.Latest == ds.Failed {
		return "" // the first release failed (its release phase): nothing is to run
	}
	return ds.Latest
}

// Deployment is a release at a scale.
type Deployment struct {
	Release string `json:"release"`
	Scale   int    `json:"scale"`
}

// Constraint restricts the hosts an instance may run on by one of their labels: Op is =,
// != or ~= (a regular expression).
type Constraint struct {
	Key   string `json:"key"`
	Op    string `json:"op"`
	Value string `json:"value"`
}

// Instance is one running copy of a release, placed on one host.
type Instance struct {
	// ID is stable and unique: formation-service-release-index (InstanceID). The host
	// running it puts it in the container's name, gilliam-<host>-<instance>
	// (ContainerName), and in the ID of its Consul registration, <instance>@<host>
	// (RegistrationID), whose meta "instance" holds the ID alone: two hosts never share a
	// name for one instance.
	ID        string `json:"id"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Release   string `json:"release"`
	Index     int    `json:"index"`
}

// Instances expands a desired formation into its instances, sorted by ID.
func (d *Desired) Instances() []Instance {
	var out []Instance
	for service, ds := range d.Services {
		for _, dep := range ds.Deployments {
			for i := 0; i < dep.Scale; i++ {
				out = append(out, Instance{
					ID:        InstanceID(d.Formation, service, dep.Release, i),
					Formation: d.Formation, Service: service, Release: dep.Release, Index: i,
				})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Assignment is everything one host must run: one document per host, so writes are
// proportional to the hosts a change touches and a host daemon watches a single key.
type Assignment struct {
	Host      string     `json:"host"`
	Instances []Instance `json:"instances"`
	// Tasks are one-off containers the host runs to their end (release phases).
	Tasks []Task `json:"tasks,omitempty"`
	// RemoveVolumes are volumes the host removes (`gilliam-sync volumes rm`): the only
	// way an instance's volume ever goes.
	RemoveVolumes []string  `json:"remove_volumes,omitempty"`
	Updated       time.Time `json:"updated"`
}

// FormationStatus is what the control plane last did with a formation, for people:
// `gilliam-sync status` shows it.
type FormationStatus struct {
	Formation string `json:"formation"`
	Repo      string `json:"repo"`
	Ref       string `json:"ref"`
	// Commit is the last commit seen on Ref; Deployed the last one deployed.
	Commit   string `json:"commit"`
	Deployed string `json:"deployed,omitempty"`
	// Error is why Commit was not deployed (an invalid gilliam.yml, a failed build), with
	// its file and line when it has them; empty when Commit deployed.
	Error string `json:"error,omitempty"`
	// Preview is set for the preview formation of a pull request or branch.
	Preview *Preview `json:"preview,omitempty"`
	// TearingDown says why the formation is being removed (a preview closed or expired):
	// its instances stop, then its keys go.
	TearingDown string    `json:"tearing_down,omitempty"`
	Updated     time.Time `json:"updated"`
}

// Preview says what a preview formation previews.
type Preview struct {
	// Of is the formation it is a preview of; PR the pull request, or Branch the branch.
	Of     string `json:"of"`
	PR     int    `json:"pr,omitempty"`
	Branch string `json:"branch,omitempty"`
	// TTL is how long it lives without a new commit (from its gilliam.yml); Updated is
	// when its last commit was deployed.
	TTL     time.Duration `json:"ttl"`
	Updated time.Time     `json:"updated"`
}

// Observed is what the control plane has done with the refs of one repository: per
// (ref, gilliam.yml file), the last commit handled. It lets a new leader, or a restarted
// daemon, carry on without redoing work or resurrecting torn-down previews.
type Observed struct {
	Repo    string                    `json:"repo"`
	Targets map[string]ObservedTarget `json:"targets"`
}

// ObservedTarget is one ref and file of a repository.
type ObservedTarget struct {
	Ref  string `json:"ref"`
	File string `json:"file"`
	// Commit is the last commit handled: deployed, or refused for a reason retrying
	// cannot fix (an invalid gilliam.yml, a failed build, previews off).
	Commit    string `json:"commit"`
	Formation string `json:"formation,omitempty"`
	// Preview is set for pull-request and branch previews; TornDown once their formation
	// was removed (closed, expired): it is not created again for the same commit.
	Preview  bool `json:"preview,omitempty"`
	TornDown bool `json:"torn_down,omitempty"`
	// Error is why Commit was not deployed, when it was refused before it had a formation
	// of its own (a formation name another source owns): `status` shows it.
	Error string `json:"error,omitempty"`
}

// Claim says which source owns a formation name: the first (repository, file) to deploy
// it. Another source naming the same formation is refused, so it can neither overwrite its
// desired state nor receive its config vars; `gilliam-sync formations transfer` moves it.
type Claim struct {
	Formation string `json:"formation"`
	// Repo is the repository's key (gitwatch.CacheName of its URL); URL its sanitized URL,
	// for people.
	Repo  string    `json:"repo"`
	URL   string    `json:"url"`
	File  string    `json:"file"`
	Since time.Time `json:"since"`
}

// PlacementReport is what the scheduler could not place, and why, as of its last change:
// `gilliam-sync status` and `plan` show it.
type PlacementReport struct {
	Unplaced []UnplacedInstance `json:"unplaced"`
	Updated  time.Time          `json:"updated"`
}

// UnplacedInstance is a desired instance no host could take.
type UnplacedInstance struct {
	Instance  string `json:"instance"`
	Formation string `json:"formation"`
	Service   string `json:"service"`
	Reason    string `json:"reason"`
}

// Event is one thing that happened to a formation, for people: a deploy, a roll-out
// started, done or failed, a rollback, a scale or config change.
type Event struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service,omitempty"`
	Release string    `json:"release,omitempty"`
	What    string    `json:"what"`
}

// HostStatus is what a host daemon reports about its instances.
type HostStatus struct {
	Host    string `json:"host"`
	Address string `json:"address"`
	// Logs is the URL where the host daemon serves its instances' logs (`gilliam-sync
	// logs`); empty when it serves none.
	Logs      string           `json:"logs,omitempty"`
	Instances []InstanceStatus `json:"instances"`
	// Strays are containers with this host's labels that no assignment names (short
	// container IDs): they are removed once they have been strays for the grace period.
	Strays []string `json:"strays,omitempty"`
	// ImagesRemoved are the last images the host removed (its own pulls that no assignment
	// named for its image GC grace), newest last.
	ImagesRemoved []RemovedImage `json:"images_removed,omitempty"`
	// Tasks are the one-off tasks of the assignment, as they run or ended.
	Tasks []TaskStatus `json:"tasks,omitempty"`
	// Volumes are the instance volumes on the host, with what they use.
	Volumes []VolumeStatus `json:"volumes,omitempty"`
	// Started is when the host daemon started, so a restart shows.
	Started time.Time `json:"started,omitzero"`
	// Updated is when this report was written; a host daemon rewrites it at least every
	// minute, so an old one means the daemon, or its way to Consul, is gone.
	Updated time.Time `json:"updated"`
}

// InstanceStatus is one instance as its host sees it.
type InstanceStatus struct {
	ID        string `json:"id"`
	Release   string `json:"release"`
	Container string `json:"container,omitempty"`
	// State is the container's: created, running, exited, ... or pulling, failed.
	State string `json:"state"`
	// Address is host:port of the primary port, as registered in Consul.
	Address string `json:"address,omitempty"`
	// Health is the status of the instance's check on its host's Consul agent: passing,
	// warning or critical; empty when unknown. Registered says the agent has the instance's
	// registration as the host daemon made it.
	Health     string `json:"health,omitempty"`
	Registered bool   `json:"registered,omitempty"`
	// Restarts counts the restarts after a crash; ExitCode is the code of the last exit.
	Restarts int `json:"restarts,omitempty"`
	ExitCode int `json:"exit_code,omitempty"`
	// CrashLoop is set when the instance crashed several times in a row without staying
	// up; NextRestart is when it is started again; Logs are the last lines it wrote before
	// its last exit.
	CrashLoop   bool      `json:"crash_loop,omitempty"`
	NextRestart time.Time `json:"next_restart,omitzero"`
	Logs        []string  `json:"logs,omitempty"`
	Error       string    `json:"error,omitempty"`
	// RestartReason is why the instance was last restarted: "crash" (it exited) or
	// "unhealthy" (its check stayed critical past its grace). UnhealthyRestarts counts the
	// restarts for the second reason on this host, for the leader to move an instance that
	// keeps failing here.
	RestartReason     string `json:"restart_reason,omitempty"`
	UnhealthyRestarts int    `json:"unhealthy_restarts,omitempty"`
}

// RemovedImage is an image a host daemon removed because no assignment had named it for
// its grace period.
type RemovedImage struct {
	Image   string    `json:"image"`
	Bytes   int64     `json:"bytes,omitempty"`
	Removed time.Time `json:"removed"`
}
