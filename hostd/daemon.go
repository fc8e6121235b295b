package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Docker is the part of the Docker client a host daemon uses.
type Docker interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	ContainerStart(ctx context.Context, containerID string, options container.StartOptions) error
	ContainerStop(ctx context.Context, containerID string, options container.StopOptions) error
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	ContainerLogs(ctx context.Context, containerID string, options container.LogsOptions) (io.ReadCloser, error)
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, refStr string, options image.PullOptions) (io.ReadCloser, error)
	ImageRemove(ctx context.Context, imageID string, options image.RemoveOptions) ([]image.DeleteResponse, error)
	NetworkCreate(ctx context.Context, name string, options network.CreateOptions) (network.CreateResponse, error)
	NetworkInspect(ctx context.Context, networkID string, options network.InspectOptions) (network.Inspect, error)
	NetworkList(ctx context.Context, options network.ListOptions) ([]network.Summary, error)
	NetworkRemove(ctx context.Context, networkID string) error
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	NegotiateAPIVersion(ctx context.Context)
	volumeEngine
}

var _ Docker = (*client.Client)(nil)

// Config configures a host daemon. Only ID and Advertise are required; every duration has
// a default for production, and tests shorten them.
type Config struct {
	// ID names the host: in Consul, in container labels, in assignments.
	ID string
	// Advertise is the IP address instances' ports are published on and registered with.
	Advertise string
	Labels    map[string]string
	Capacity  state.Resources
	// DataDir keeps the last assignment and its releases, so a restart without Consul
	// still knows what to run.
	DataDir string
	Logger  *slog.Logger

	// HostTTL is the TTL of the host's liveness check (renewed every third of it);
	// DeregisterAfter removes a host's registrations, and its instances', once critical for
	// that long (5s, 1m).
	HostTTL         time.Duration
	DeregisterAfter time.Duration
	// StopTimeout is how long an instance has between SIGTERM and SIGKILL (10s).
	StopTimeout time.Duration
	// DrainDelay is how long a running instance keeps running after it left the catalog
	// and before its SIGTERM (1s): routers and discovery follow the catalog within a few
	// tens of milliseconds, so requests sent just before stop arriving, and an app that
	// does not finish its requests on SIGTERM loses none. Negative: no delay.
	DrainDelay time.Duration
	// Resync is how often a converge pass runs without any event (5s): it is also how
	// soon registrations the agent lost are made again.
	Resync time.Duration
	// OrphanGrace is how long a container with our labels that no assignment names is
	// left alone before it is removed (1m). An instance removed from the assignment stops
	// at once.
	OrphanGrace time.Duration
	// StableAfter is how long an instance must run for its restart backoff to start over
	// from the release's minimum (1m).
	StableAfter time.Duration
	// PullBackoff paces the retries of a failed image pull (1s to 1m).
	PullBackoff Backoff
	// ConsulBackoff paces the retries of the assignment watch when Consul fails (500ms to
	// 15s); ConsulTimeout bounds every other call to Consul (5s).
	ConsulBackoff Backoff
	ConsulTimeout time.Duration
	// ConsulProbe is how often, while the watch fails, the daemon asks whether Consul
	// answers again (and has the agent rejoin lost servers), so that the watch goes again
	// at once rather than a backoff later (2s).
	ConsulProbe time.Duration
	// WatchWait is how long a blocking query waits (5m); WatchMinDelay the least time
	// between two queries (100ms).
	WatchWait     time.Duration
	WatchMinDelay time.Duration
	// StatusInterval is the least time between two writes of the host's status (1s);
	// StatusRefresh the most (1m), so that an old status means a host that is gone.
	StatusInterval time.Duration
	StatusRefresh  time.Duration
	// Parallel is how many containers are created, started or stopped at once (8).
	Parallel int
	// RegistryAuth holds the credentials images are pulled with, by registry host (see
	// LoadRegistryAuth); a registry not in it is pulled from anonymously.
	RegistryAuth map[string]RegistryCredential
	// UnhealthyAfter is how long an instance's check may stay critical, once its grace is
	// over, before the instance is restarted (DefaultUnhealthyAfter).
	UnhealthyAfter time.Duration
	// ImageGCGrace is how long an image this daemon pulled stays once no assignment names
	// it (DefaultImageGCGrace).
	ImageGCGrace time.Duration
	// PidsLimit is the most processes an instance's container may have (DefaultPidsLimit).
	PidsLimit int64
	// Key is the host's key pair, which its instances' config vars are sealed to (nil: the
	// one in DataDir/host.key, made at the first start).
	Key *seal.Key
	// MeshListen is where other hosts' sibling proxies reach this host's instances, over
	// mutual TLS (docs/networking.md): host:port, the advertise address and any free port
	// by default.
	MeshListen string
	// Metrics records instances by state, restarts and pulls (nil: none).
	Metrics *metrics.Metrics
	// ArchiveLines is how many of its last lines a removed container leaves in its
	// formation's log archive (DefaultArchiveLines); LogArchiveBytes bounds the archive of
	// each formation on this host (DefaultLogArchiveBytes).
	ArchiveLines    int
	LogArchiveBytes int64
	// LogsURL is where this host serves its instances' logs (LogsHandler), written in its
	// status for `gilliam-sync logs` to find; empty: none.
	LogsURL string
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HostTTL, 5*time.Second)
	def(&c.DeregisterAfter, time.Minute)
	def(&c.StopTimeout, 10*time.Second)
	def(&c.DrainDelay, time.Second)
	def(&c.Resync, 5*time.Second)
	def(&c.OrphanGrace, time.Minute)
	def(&c.StableAfter, time.Minute)
	def(&c.PullBackoff.Min, time.Second)
	def(&c.PullBackoff.Max, time.Minute)
	def(&c.ConsulBackoff.Min, 500*time.Millisecond)
	def(&c.ConsulBackoff.Max, 15*time.Second)
	def(&c.ConsulTimeout, 5*time.Second)
	def(&c.ConsulProbe, 2*time.Second)
	def(&c.WatchWait, 5*time.Minute)
	def(&c.WatchMinDelay, 100*time.Millisecond)
	def(&c.StatusInterval, time.Second)
	def(&c.StatusRefresh, time.Minute)
	if c.Parallel <= 0 {
		c.Parallel = 8
	}
	if c.ArchiveLines <= 0 {
		c.ArchiveLines = DefaultArchiveLines
	}
	if c.LogArchiveBytes <= 0 {
		c.LogArchiveBytes = DefaultLogArchiveBytes
	}
	def(&c.UnhealthyAfter, DefaultUnhealthyAfter)
	def(&c.ImageGCGrace, DefaultImageGCGrace)
	if c.PidsLimit <= 0 {
		c.PidsLimit = DefaultPidsLimit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Defaults of Config.
const (
	DefaultUnhealthyAfter = 30 * time.Second
	DefaultImageGCGrace   = time.Hour
)

// Daemon converges the containers of one host to its assignment.
type Daemon struct {
	cfg     Config
	key     *seal.Key
	store   *state.Store
	docker  Docker
	log     *slog.Logger
	disk    disk
	pulls   *puller
	started time.Time

	kick       chan struct{} // asks the converge loop for a pass now
	firstFetch chan struct{} // closed once the watch has heard from Consul, or failed to
	firstOnce  sync.Once

	pass sync.Mutex // one converge pass at a time

	joining atomic.Bool // a rejoin of the Consul servers is under way

	mu         sync.Mutex
	assignment *state.Assignment // the last one seen: Consul's, or the persisted one
	known      map[string]bool   // instances of the assignments seen
	confirmed  bool              // Consul gave the assignment since start
	missingLog bool              // "assignment missing" was logged
	releases   map[string]*state.Release
	history    map[string]history
	strayAt    map[string]time.Time
	status     statusWriter
	converged  bool
	// pulledImages are the images this daemon pulled (persisted), the only ones it removes;
	// imagesRemoved the last it removed, for status.
	pulledImages  map[string]*pulledImage
	imagesRemoved []state.RemovedImage

	// Networking (network.go, siblings.go, mesh.go): the formations' networks on this
	// host, the sibling proxy, the host-to-host listener, and the instances it may reach.
	netMu sync.Mutex
	nets  map[string]formationNet
	// netsSwept is when this host's formation networks were last all checked against its
	// assignment (zero: not yet since the start, so a network left while the daemon was
	// down goes too).
	netsSwept time.Time
	proxy     *siblingProxy
	mesh      atomic.Pointer[mesh]
	local     atomic.Pointer[map[string]localInstance]
	// taskMem and vols are the converge pass's memory of one-off tasks and volumes.
	taskMem taskMemory
	vols    volumeMemory
}

// New returns a host daemon; Run starts it. It reads the persisted assignment, so that
// the daemon converges to it even when Consul does not answer.
func New(cfg Config, store *state.Store, docker Docker) (*Daemon, error) {
	cfg.setDefaults()
	if cfg.ID == "" || cfg.Advertise == "" {
		return nil, errors.New("hostd: a host needs an id and an advertise address")
	}
	d := &Daemon{
		cfg:        cfg,
		store:      store,
		docker:     docker,
		log:        cfg.Logger.With("host", cfg.ID),
		disk:       disk{dir: cfg.DataDir},
		kick:       make(chan struct{}, 1),
		firstFetch: make(chan struct{}),
		known:      map[string]bool{},
		releases:   map[string]*state.Release{},
		history:    map[string]history{},
		strayAt:    map[string]time.Time{},
		nets:       map[string]formationNet{},
	}
	d.proxy = newSiblingProxy(d)
	d.pulls = newPuller(docker, cfg.RegistryAuth, cfg.PullBackoff, d.log, d.poke)
	d.pulls.pulled = d.notePulled
	d.pulls.metrics, d.pulls.host = cfg.Metrics, cfg.ID
	var err error
	if d.key = cfg.Key; d.key == nil {
		if d.key, err = hostKey(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("hostd: %w", err)
		}
	}
	if d.pulledImages, err = d.disk.loadPulled(); err != nil {
		d.log.Warn("record of pulled images unreadable: none will be removed until pulled again", "err", err)
	}
	now := time.Now()
	for _, im := range d.pulledImages {
		im.lastNamed = now // a restart starts every image's clock again
	}
	a, err := d.disk.loadAssignment()
	if err != nil {
		d.log.Warn("persisted assignment unreadable; waiting for Consul", "err", err)
	}
	if a != nil {
		d.assignment = a
		for _, inst := range a.Instances {
			d.known[inst.ID] = true
		}
	}
	return d, nil
}

// Run runs the host daemon until ctx ends: liveness in Consul, the assignment watch, the
// engine's events and the converge loop. Containers keep running when it returns: a
// restarted daemon adopts them.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now().UTC()
	d.mu.Lock()
	persisted := -1
	if d.assignment != nil {
		persisted = len(d.assignment.Instances)
	}
	d.mu.Unlock()
	d.log.Info("host daemon started", "advertise", d.cfg.Advertise, "persisted_instances", persisted)
	// The client negotiates the engine's API version on its first call, unguarded against
	// calls in parallel: have it done before any run.
	d.docker.NegotiateAPIVersion(ctx)

	var wg sync.WaitGroup
	if err := d.startMesh(ctx, &wg); err != nil {
		return err
	}
	defer d.proxy.close()
	wg.Add(4)
	go func() { defer wg.Done(); d.liveness(ctx) }()
	go func() { defer wg.Done(); d.oneOffs(ctx) }()
	go func() { defer wg.Done(); d.watch(ctx) }()
	go func() { defer wg.Done(); d.events(ctx) }()
	// Converge to what Consul says rather than to a persisted assignment it may have
	// changed since, unless Consul takes long to say it.
	select {
	case <-d.firstFetch:
	case <-time.After(d.cfg.ConsulTimeout):
	case <-ctx.Done():
	}
	d.convergeLoop(ctx)
	wg.Wait()
	d.pulls.wait()
	return nil
}

func (d *Daemon) convergeLoop(ctx context.Context) {
	tick := time.NewTicker(d.cfg.Resync)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	failing := false
	for {
		wake, err := d.reconcile(ctx)
		failing = logTransition(d.log, failing, err, "converge")
		if wake.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(max(time.Until(wake), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-tick.C:
		case <-timer.C:
		}
	}
}

func (d *Daemon) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// watch follows the host's assignment in Consul.
func (d *Daemon) watch(ctx context.Context) {
	w := &watcher{
		fetch: func(ctx context.Context, index uint64) (*state.Assignment, uint64, error) {
			// A blocking query answers within its wait plus Consul's jitter (a sixteenth);
			// later than that, the connection hangs.
			ctx, cancel := context.WithTimeout(ctx, d.cfg.WatchWait+d.cfg.WatchWait/16+d.cfg.ConsulTimeout)
			defer cancel()
			return d.store.WaitAssignment(ctx, d.cfg.ID, index, d.cfg.WatchWait)
		},
		minDelay:   d.cfg.WatchMinDelay,
		retry:      d.cfg.ConsulBackoff,
		probe:      d.probeConsul,
		probeEvery: d.cfg.ConsulProbe,
		log:        d.log,
	}
	w.run(ctx, d.setAssignment, func(error) { d.firstOnce.Do(func() { close(d.firstFetch) }) })
}

// setAssignment records and persists the assignment Consul gave, and asks for a pass.
func (d *Daemon) setAssignment(a *state.Assignment) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if missing(a) && d.assignment != nil && len(d.assignment.Instances) > 0 {
		if !d.missingLog {
			d.log.Error("assignment missing in Consul (was its data lost?); keeping the last known one", "instances", len(d.assignment.Instances))
			d.missingLog = true
		}
		return
	}
	d.missingLog = false
	wasConfirmed := d.confirmed
	d.confirmed = true
	if d.assignment != nil && sameAssignment(d.assignment, a) {
		if !wasConfirmed {
			d.poke() // strays may go now
		}
		return
	}
	d.assignment = a
	for _, inst := range a.Instances {
		d.known[inst.ID] = true
	}
	if err := d.disk.saveAssignment(a); err != nil {
		d.log.Warn("persist assignment", "err", err)
	}
	if err := d.disk.pruneReleases(a.Instances); err != nil {
		d.log.Warn("prune persisted releases", "err", err)
	}
	d.log.Info("assignment changed", "instances", len(a.Instances))
	d.poke()
}

// liveness registers the host in Consul and keeps its TTL check passing.
func (d *Daemon) liveness(ctx context.Context) {
	reg := sealed(d.store.HostRegistration(state.Host{ID: d.cfg.ID, Address: d.cfg.Advertise, Capacity: d.cfg.Capacity, Labels: d.cfg.Labels}, d.cfg.HostTTL, d.cfg.DeregisterAfter))
	registered, failing := false, false
	tick := time.NewTicker(d.cfg.HostTTL / 3)
	defer tick.Stop()
	for {
		err := d.heartbeat(ctx, reg, &registered)
		failing = logTransition(d.log, failing, err, "host liveness")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// heartbeat renews the host's TTL check, registering the host first unless the agent has
// it already as it should be (a restarted daemon leaves it alone).
func (d *Daemon) heartbeat(ctx context.Context, reg *api.AgentServiceRegistration, registered *bool) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	agent := d.store.Client().Agent()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if !*registered {
		have, _, err := agent.Service(reg.ID, q)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("read host registration: %w", err)
		}
		if have == nil || have.Meta[MetaRegistration] != reg.Meta[MetaRegistration] {
			if err := agent.ServiceRegisterOpts(reg, (api.ServiceRegisterOpts{}).WithContext(ctx)); err != nil {
				return fmt.Errorf("register host: %w", err)
			}
			d.log.Info("host registered in Consul", "service", reg.Name, "address", d.cfg.Advertise)
		}
		// Then the key: the leader takes a host whose registration is on the node the key
		// record names, and seals config vars to it.
		if err := d.publishKey(ctx, agent, reg.ID); err != nil {
			return err
		}
		*registered = true
	}
	if err := agent.UpdateTTLOpts(d.store.HostCheckID(d.cfg.ID), "alive", api.HealthPassing, q); err != nil {
		*registered = false // the agent may have lost it (restarted without its data)
		return fmt.Errorf("renew host liveness: %w", err)
	}
	return nil
}

// events asks for a pass as soon as one of our containers dies or goes, rather than at
// the next resync: restarts and their backoff are timed from the exit.
func (d *Daemon) events(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		sub, cancel := context.WithCancel(ctx)
		msgs, errs := d.docker.Events(sub, events.ListOptions{Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", LabelHost+"="+d.cfg.ID),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionDestroy)),
			filters.Arg("event", string(events.ActionOOM)),
		)})
		d.poke() // events may have been missed while not subscribed
		err := func() error {
			for {
				select {
				case <-msgs:
					failures = 0
					d.poke()
				case err := <-errs:
					return err
				case <-ctx.Done():
					return nil
				}
			}
		}()
		cancel()
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures == 1 {
			d.log.Warn("docker events failing", "err", err)
		}
		sleep(ctx, jitter(d.cfg.ConsulBackoff.Delay(failures)))
	}
}

// logTransition logs when something starts failing and when it recovers, not every failure.
func logTransition(log *slog.Logger, failing bool, err error, what string) bool {
	switch {
	case err != nil && !failing && !errors.Is(err, context.Canceled):
		log.Warn(what+" failing", "err", err)
		return true
	case err == nil && failing:
		log.Info(what + " recovered")
		return false
	}
	return failing
}

// isNotFound tells a Consul 404 (no such service, check or key) from a failure.
func isNotFound(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 404
}
