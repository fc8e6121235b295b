package hostd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/hashicorp/consul/api"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

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
	ImageInspect(ctx context.Context, imageID string, inspectOpts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImagePull(ctx context.Context, refStr string, options image.PullOptions) (io.ReadCloser, error)
}

// Config configures a host daemon.
type Config struct {
	// ID names the host: in Consul, in container labels, in assignments.
	ID string
	// Advertise is the IP address instances' ports are published on and registered with.
	Advertise string
	Labels    map[string]string
	Capacity  state.Resources
	// DataDir keeps the last assignment, so a restart without Consul still knows it.
	DataDir string
	Logger  *slog.Logger

	// HostTTL is the TTL of the host's liveness check (renewed every third of it);
	// DeregisterAfter removes a host's registrations, and its instances', once critical for
	// that long; StopTimeout is how long an instance has between SIGTERM and SIGKILL;
	// Resync is how often containers are checked without an assignment change.
	HostTTL         time.Duration
	DeregisterAfter time.Duration
	StopTimeout     time.Duration
	Resync          time.Duration
}

func (c *Config) setDefaults() {
	if c.HostTTL == 0 {
		c.HostTTL = 10 * time.Second
	}
	if c.DeregisterAfter == 0 {
		c.DeregisterAfter = time.Minute
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.Resync == 0 {
		c.Resync = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Daemon converges the containers of one host to its assignment.
type Daemon struct {
	cfg    Config
	store  *state.Store
	docker Docker
	log    *slog.Logger

	kick chan struct{} // asks the converge loop for a pass now

	mu         sync.Mutex
	assignment *state.Assignment // the last one seen: Consul's, or the persisted one
	releases   map[string]*state.Release
	registered map[string]registeredInstance // instance ID -> what Consul was told
	lastStatus *state.HostStatus
}

type registeredInstance struct {
	container string
	hostPort  int
}

// New returns a host daemon; Run starts it.
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
		kick:       make(chan struct{}, 1),
		releases:   map[string]*state.Release{},
		registered: map[string]registeredInstance{},
	}
	if err := d.loadAssignment(); err != nil {
		d.log.Warn("persisted assignment unreadable; waiting for Consul", "err", err)
	}
	return d, nil
}

// Run runs the host daemon until ctx ends: liveness in Consul, the assignment watch, and the
// converge loop. Containers keep running when it returns.
func (d *Daemon) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.liveness(ctx) }()
	go func() { defer wg.Done(); d.watch(ctx) }()
	d.convergeLoop(ctx)
	wg.Wait()
	return nil
}

// liveness registers the host in Consul and keeps its TTL check passing.
func (d *Daemon) liveness(ctx context.Context) {
	reg := state.HostRegistration(state.Host{ID: d.cfg.ID, Address: d.cfg.Advertise, Capacity: d.cfg.Capacity, Labels: d.cfg.Labels}, d.cfg.HostTTL, d.cfg.DeregisterAfter)
	agent := d.store.Client().Agent()
	registered, failing := false, false
	tick := time.NewTicker(d.cfg.HostTTL / 3)
	defer tick.Stop()
	for {
		var err error
		if !registered {
			if err = agent.ServiceRegisterOpts(reg, (api.ServiceRegisterOpts{}).WithContext(ctx)); err == nil {
				registered = true
				d.log.Info("host registered in Consul", "service", reg.Name, "address", d.cfg.Advertise)
			}
		}
		if registered {
			if err = agent.UpdateTTLOpts(state.HostCheckID(d.cfg.ID), "alive", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
				registered = false // the agent may have lost it (restarted): register again
			}
		}
		failing = logTransition(d.log, failing, err, "host liveness")
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watch follows the host's assignment with blocking queries and kicks a converge on change.
func (d *Daemon) watch(ctx context.Context) {
	var index uint64
	failing := false
	for ctx.Err() == nil {
		a, next, err := d.store.WaitAssignment(ctx, d.cfg.ID, index, 5*time.Minute)
		failing = logTransition(d.log, failing, err, "assignment watch")
		if err != nil {
			sleep(ctx, 2*time.Second)
			continue
		}
		if next < index {
			next = 0 // the index went backwards (a restored or new Consul): start over
		}
		index = next
		if d.setAssignment(a) {
			d.log.Info("assignment changed", "instances", len(a.Instances))
			d.poke()
		}
	}
}

// setAssignment records and persists a new assignment; false when it is the one we have.
func (d *Daemon) setAssignment(a *state.Assignment) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.assignment != nil && reflect.DeepEqual(d.assignment.Instances, a.Instances) {
		return false
	}
	d.assignment = a
	if err := d.saveAssignment(a); err != nil {
		d.log.Warn("persist assignment", "err", err)
	}
	return true
}

func (d *Daemon) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

func (d *Daemon) convergeLoop(ctx context.Context) {
	tick := time.NewTicker(d.cfg.Resync)
	defer tick.Stop()
	failing := false
	for {
		err := d.ReconcileOnce(ctx)
		failing = logTransition(d.log, failing, err, "converge")
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-tick.C:
		}
	}
}

func (d *Daemon) assignmentPath() string { return filepath.Join(d.cfg.DataDir, "assignment.json") }

func (d *Daemon) saveAssignment(a *state.Assignment) error {
	if d.cfg.DataDir == "" {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.cfg.DataDir, 0o755); err != nil {
		return err
	}
	tmp := d.assignmentPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, d.assignmentPath())
}

func (d *Daemon) loadAssignment() error {
	if d.cfg.DataDir == "" {
		return nil
	}
	b, err := os.ReadFile(d.assignmentPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var a state.Assignment
	if err := json.Unmarshal(b, &a); err != nil {
		return fmt.Errorf("%s: %w", d.assignmentPath(), err)
	}
	d.assignment = &a
	return nil
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

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
