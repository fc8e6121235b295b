package main

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/google/go-containerregistry/pkg/authn"
	"io"
	"os"
	"time"

	units "github.com/docker/go-units"
	"gopkg.in/yaml.v3"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
)

// daemonConfig is gilliam-sync.yml, the sync daemon's configuration file; docs/sync.md
// documents every key. Durations are written with a unit ("10s").
type daemonConfig struct {
	// Data holds the repositories' caches, pack's home and the build logs.
	Data string `yaml:"data"`
	// KeyFile holds the installation's root key, which opens config vars (default
	// <data>/sync.key, made at the first start; $GILLIAM_SYNC_KEY instead when set). Every
	// sync daemon of an installation must have the same key.
	KeyFile string `yaml:"key_file"`
	// Registry is where images are published (host:port); Builder the buildpack builder.
	Registry string `yaml:"registry"`
	Builder  string `yaml:"builder"`
	// keychain holds the registry credentials the builder pushes with; nil is the Docker
	// keychain (DOCKER_CONFIG). gilliam-sync up sets it for its embedded registry.
	keychain authn.Keychain
	// Interval is the longest the leader goes without deciding (a safety net: it decides
	// on every change it follows).
	Interval time.Duration `yaml:"interval"`
	Leader   struct {
		ID        string        `yaml:"id"`
		LockTTL   time.Duration `yaml:"lock_ttl"`
		LockDelay time.Duration `yaml:"lock_delay"`
		// LivenessTTL is the TTL of the daemon's own check, which the leader's session
		// is bound to: a dead leader loses the lock within it (default 5s).
		LivenessTTL time.Duration `yaml:"liveness_ttl"`
	} `yaml:"leader"`
	Placement struct {
		Binpack   bool          `yaml:"binpack"`
		DeadAfter time.Duration `yaml:"dead_after"`
	} `yaml:"placement"`
	Builds struct {
		Concurrency int           `yaml:"concurrency"`
		Timeout     time.Duration `yaml:"timeout"`
		// GCInterval is how often the leader collects what builds left that no kept
		// release uses (see gilliam-sync gc); GCGrace spares what was built this recently.
		GCInterval time.Duration `yaml:"gc_interval"`
		GCGrace    time.Duration `yaml:"gc_grace"`
		// Network is the Docker network build containers join: none (the default) or a
		// network the operator made; never host. Memory (Docker's syntax: 2g, 512m), CPUs
		// and Pids cap each build container. DockerfileURLs lets a Dockerfile ADD a URL,
		// which the engine fetches from the host's network.
		Network        string  `yaml:"network"`
		Memory         string  `yaml:"memory"`
		CPUs           float64 `yaml:"cpus"`
		Pids           int64   `yaml:"pids"`
		DockerfileURLs bool    `yaml:"dockerfile_urls"`
		// AllowedRegistries are the registries images named in gilliam.yml (and base
		// images a Dockerfile pulls) may come from; empty: any public registry.
		// InsecureRegistries are reached over plain HTTP, and allowed.
		AllowedRegistries  []string `yaml:"allowed_registries"`
		InsecureRegistries []string `yaml:"insecure_registries"`
	} `yaml:"builds"`
	Releases struct {
		Keep int `yaml:"keep"`
	} `yaml:"releases"`
	Limits struct {
		// InstancesPerFormation caps the instances one formation may ask for, over all
		// its services (default 500): a gilliam.yml past it is refused.
		InstancesPerFormation int `yaml:"instances_per_formation"`
	} `yaml:"limits"`
	Previews struct {
		Max int `yaml:"max"`
	} `yaml:"previews"`
	// Webhooks is the webhook receiver (POST /hooks/github, /hooks/gitlab, /hooks/gitea):
	// listen address (empty: no receiver), TLS, timeouts and caps; see docs/gitwatch.md.
	Webhooks gitwatch.ServerConfig `yaml:"webhooks"`
	Repos    []gitwatch.RepoConfig `yaml:"repos"`
}

// defaults of the keys a file leaves out.
func (c *daemonConfig) defaults() {
	if c.Data == "" {
		c.Data = ".gilliam/sync"
	}
	if c.Builder == "" {
		c.Builder = build.DefaultBuilder
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Leader.LockTTL == 0 {
		c.Leader.LockTTL = 15 * time.Second
	}
	if c.Leader.LockDelay == 0 {
		c.Leader.LockDelay = 5 * time.Second
	}
	if c.Builds.GCInterval == 0 {
		c.Builds.GCInterval = time.Hour
	}
	if c.Builds.GCGrace == 0 {
		c.Builds.GCGrace = time.Hour
	}
	if c.Placement.DeadAfter == 0 {
		c.Placement.DeadAfter = 10 * time.Second
	}
}

// loadDaemonConfig reads and checks a configuration file: unknown keys are errors, and
// every error names the file and, where YAML knows it, the line.
func loadDaemonConfig(path string) (*daemonConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c daemonConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *daemonConfig) validate() error {
	var errs []error
	if c.Registry == "" {
		errs = append(errs, errors.New("registry: required (host:port of the registry images are published to)"))
	}
	if len(c.Repos) == 0 {
		errs = append(errs, errors.New("repos: at least one repository"))
	}
	if c.Leader.LockTTL < 10*time.Second {
		errs = append(errs, fmt.Errorf("leader.lock_ttl: %s is below Consul's minimum session TTL of 10s", c.Leader.LockTTL))
	}
	if err := gitwatch.ValidateRepos(c.Repos); err != nil {
		errs = append(errs, err)
	}
	if c.Webhooks.Listen != "" {
		if err := c.Webhooks.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := c.buildIsolation(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// buildIsolation is the builds' isolation as build.Config takes it; build.New checks the
// values and fills in the defaults.
func (c *daemonConfig) buildIsolation() (build.Isolation, error) {
	iso := build.Isolation{Network: c.Builds.Network, CPUs: c.Builds.CPUs, Pids: c.Builds.Pids,
		DockerfileURLs: c.Builds.DockerfileURLs}
	if c.Builds.Network == "host" {
		return iso, errors.New("builds.network: host would give the code built the host's loopback (Consul, the registry); use none or a network of your own")
	}
	if c.Builds.Memory != "" {
		m, err := units.RAMInBytes(c.Builds.Memory)
		if err != nil {
			return iso, fmt.Errorf("builds.memory: %w", err)
		}
		iso.Memory = m
	}
	return iso, nil
}

// buildRegistries is where images named by repositories may come from.
func (c *daemonConfig) buildRegistries() build.Registries {
	return build.Registries{Allowed: c.Builds.AllowedRegistries, Insecure: c.Builds.InsecureRegistries}
}
