package build

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"

	packclient "github.com/buildpacks/pack/pkg/client"
	mobycontainer "github.com/moby/moby/api/types/container"
	mobyclient "github.com/moby/moby/client"
)

// What keeps a build away from the host (docs/security.md, "Builds"):
//
//   - Build containers join the Docker network Isolation.Network, "none" unless the
//     operator names another; never the host's: a build cannot reach the host's loopback
//     (Consul, the registry, the Docker API on TCP), the metadata address or the host's
//     private networks. Buildpack builds need no network: they build into the local engine
//     (the lifecycle talks to it through its socket) and gilliam-sync pushes the image to the
//     registry itself (buildpack.go).
//   - Each build container gets a memory cap (swap included), a CPU cap and a pids cap.
//   - Dockerfile builds run their RUN steps on the same network with the same memory and
//     CPU caps; a Dockerfile that would make the engine fetch from the host's network (ADD
//     of a URL, a base image to pull from a registry not allowed) is refused before the
//     build (dockerfile.go).

// DefaultNetwork is the Docker network build containers join when the operator names none:
// no network at all.
const DefaultNetwork = "none"

// Isolation is what a build container may reach and use.
type Isolation struct {
	// Network is the Docker network build containers join: "none" (DefaultNetwork, the
	// default) or the name of a network the operator made (a bridge with egress rules, say).
	// The host's network is refused.
	Network string
	// Memory caps each build container, in bytes, swap included (default 2 GiB).
	Memory int64
	// CPUs caps each build container's CPU time, in cores (default 2).
	CPUs float64
	// Pids caps the processes and threads of each buildpack build container (default
	// 4096). The engine's classic builder, which runs Dockerfile builds, has no such
	// setting: see docs/security.md.
	Pids int64
	// DockerfileURLs lets a Dockerfile ADD a URL. The engine fetches it from the host's
	// network, whatever Network says, so it is refused unless the operator allows it.
	DockerfileURLs bool
}

// Defaults of Isolation.
const (
	DefaultMemory = 2 << 30
	DefaultPids   = 4096
	// BuildCPUShares is a build container's CPU weight: a quarter of a running instance's
	// default (1024). Under contention the instances and the daemons of a host that is also
	// the builder come first, and a build takes what they leave; alone, it takes its cap.
	BuildCPUShares = 256
)

// DefaultCPUs is two cores, and never every core of the machine: a build beside running
// instances (a host that is also the builder, `gilliam-sync up`) leaves them one, so their
// health checks keep answering while it compiles (on 2 cores, a build taking both made every
// instance's check time out at once).
var DefaultCPUs = min(2, float64(max(1, runtime.NumCPU()-1)))

// withDefaults fills in what is unset and refuses what would expose the host.
func (i Isolation) withDefaults() (Isolation, error) {
	if i.Network == "" {
		i.Network = DefaultNetwork
	}
	switch {
	case i.Network == "host":
		return i, fmt.Errorf("build network %q: the host's network would expose its loopback (Consul, the registry) to the code built; use none or a network of your own", i.Network)
	case strings.HasPrefix(i.Network, "container:"):
		return i, fmt.Errorf("build network %q: sharing another container's network is refused", i.Network)
	}
	if i.Memory == 0 {
		i.Memory = DefaultMemory
	}
	if i.CPUs == 0 {
		i.CPUs = DefaultCPUs
	}
	if i.Pids == 0 {
		i.Pids = DefaultPids
	}
	if i.Memory < 64<<20 || i.CPUs < 0.01 || math.IsNaN(i.CPUs) || math.IsInf(i.CPUs, 0) || i.Pids < 16 {
		return i, fmt.Errorf("build limits: memory %d bytes (at least 64 MiB), cpus %g (at least 0.01), pids %d (at least 16)", i.Memory, i.CPUs, i.Pids)
	}
	return i, nil
}

// nanoCPUs is CPUs as the engine counts them.
func (i Isolation) nanoCPUs() int64 { return int64(i.CPUs * 1e9) }

// apply sets the isolation on a container's host configuration.
func (i Isolation) apply(hc *mobycontainer.HostConfig) {
	hc.NetworkMode = mobycontainer.NetworkMode(i.Network)
	hc.Memory = i.Memory
	hc.MemorySwap = i.Memory // no swap on top
	hc.NanoCPUs = i.nanoCPUs()
	hc.CPUQuota, hc.CPUPeriod = 0, 0 // NanoCPUs and a quota cannot both be set
	hc.CPUShares = BuildCPUShares
	pids := i.Pids
	hc.PidsLimit = &pids
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") && !slices.Contains(hc.SecurityOpt, "no-new-privileges:true") {
		hc.SecurityOpt = append(hc.SecurityOpt, "no-new-privileges")
	}
}

// isolatedDocker is the Docker client pack uses: every container pack creates for a build
// (the lifecycle's, and any helper container) gets the isolation, whatever pack put in its
// host configuration. pack's BuildOptions can name a network but set no limits; its client
// takes any DockerClient, so this is where the limits go in.
type isolatedDocker struct {
	*mobyclient.Client
	iso Isolation
}

var _ packclient.DockerClient = (*isolatedDocker)(nil)

func (d *isolatedDocker) ContainerCreate(ctx context.Context, opts mobyclient.ContainerCreateOptions) (mobyclient.ContainerCreateResult, error) {
	hc := mobycontainer.HostConfig{}
	if opts.HostConfig != nil {
		hc = *opts.HostConfig
	}
	d.iso.apply(&hc)
	opts.HostConfig = &hc
	opts.NetworkingConfig = nil // endpoints of other networks would connect it to them
	return d.Client.ContainerCreate(ctx, opts)
}
