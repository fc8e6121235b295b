package hostd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// Labels put on every container a host daemon creates. A host daemon only ever touches
// containers that carry LabelHost with its own ID.
const (
	LabelManaged   = "io.gilliam.managed-by"
	LabelHost      = "io.gilliam.host"
	LabelInstance  = "io.gilliam.instance"
	LabelRelease   = "io.gilliam.release"
	LabelFormation = "io.gilliam.formation"
	LabelService   = "io.gilliam.service"
)

// DefaultPidsLimit is how many processes an instance's container may have at most, unless
// the host daemon is told otherwise (Config.PidsLimit).
const DefaultPidsLimit = 512

// NobodyUser is who an instance runs as when its image names no user: never root by
// default. Buildpack images name their own (cnb, 1000:1000).
const NobodyUser = "65534:65534"

// privileges is what shapes an instance's container besides its release: the user its
// image names ("" for none, which would be root) and the host's pids limit.
type privileges struct {
	ImageUser string
	PidsLimit int64
}

// capabilities are the Linux capabilities an instance keeps: none, except NET_BIND_SERVICE
// for a service with a port below 1024. Everything else Docker grants by default
// (NET_RAW, CHOWN, SETUID, ...) is dropped.
func capabilities(rel *state.Release) []string {
	for _, p := range rel.Ports {
		if p.Port < 1024 {
			return []string{"NET_BIND_SERVICE"}
		}
	}
	return nil
}

// containerSpec is what an instance's container is created from: pure, so the same
// instance, release and image always give the same container.
func containerSpec(host, advertise string, inst state.Instance, rel *state.Release, priv privileges) (*container.Config, *container.HostConfig) {
	env := map[string]string{}
	for k, v := range rel.Env {
		env[k] = v
	}
	// The platform's variables win over the release's: an app must be able to trust them.
	if len(rel.Ports) > 0 {
		env["PORT"] = strconv.Itoa(rel.Ports[0].Port)
	}
	env["GILLIAM_FORMATION"] = inst.Formation
	env["GILLIAM_SERVICE"] = inst.Service
	env["GILLIAM_RELEASE"] = inst.Release
	env["GILLIAM_INSTANCE"] = inst.ID
	env["GILLIAM_HOST"] = host
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envList := make([]string, 0, len(keys))
	for _, k := range keys {
		envList = append(envList, k+"="+env[k])
	}

	exposed := nat.PortSet{}
	bindings := nat.PortMap{}
	for _, p := range rel.Ports {
		port := nat.Port(fmt.Sprintf("%d/tcp", p.Port))
		exposed[port] = struct{}{}
		// An empty HostPort lets the engine choose a free one; it is read back after start.
		bindings[port] = []nat.PortBinding{{HostIP: advertise}}
	}

	shares := rel.Resources.CPU * 1024 / 1000
	if shares > 0 && shares < 2 {
		shares = 2 // the engine's minimum
	}
	user := ""
	if priv.ImageUser == "" {
		user = NobodyUser
	}
	pids := priv.PidsLimit
	if pids <= 0 {
		pids = DefaultPidsLimit
	}
	cfg := &container.Config{
		Image:        rel.Image,
		User:         user, // empty: the image's own
		Env:          envList,
		Entrypoint:   rel.Entrypoint,
		Cmd:          rel.Command,
		ExposedPorts: exposed,
		Labels: map[string]string{
			LabelManaged:   "gilliam-sync",
			LabelHost:      host,
			LabelInstance:  inst.ID,
			LabelRelease:   inst.Release,
			LabelFormation: inst.Formation,
			LabelService:   inst.Service,
		},
	}
	hc := &container.HostConfig{
		PortBindings: bindings,
		// Restarts are the host daemon's, with its own backoff: the engine never restarts.
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		// CPU is a weight (1024 shares per core) under contention and a cap (NanoCPUs) always;
		// memory and the number of processes are hard limits.
		Resources: container.Resources{
			CPUShares: shares,
			NanoCPUs:  rel.Resources.CPU * 1e6,
			Memory:    rel.Resources.Memory,
			PidsLimit: &pids,
		},
		// Least privilege: no capability but what a low port needs, no gaining privileges
		// through setuid binaries, and a read-only root filesystem when the release asks.
		CapDrop:        []string{"ALL"},
		CapAdd:         capabilities(rel),
		SecurityOpt:    []string{"no-new-privileges:true"},
		ReadonlyRootfs: rel.ReadOnly,
		LogConfig:      container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}},
	}
	if rel.ReadOnly {
		hc.Tmpfs = map[string]string{"/tmp": "rw,noexec,nosuid,size=64m"}
	}
	return cfg, hc
}

// logLines is how many of its last lines an instance's status shows after it exits, and
// how long each may be.
const (
	logLines   = 10
	logLineMax = 200
)

// lastLogs returns the last lines a container wrote since its last start, stdout and
// stderr together (its log keeps the lines of every run).
func lastLogs(ctx context.Context, docker Docker, id string, since time.Time) ([]string, error) {
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(logLines)}
	if !since.IsZero() {
		opts.Since = since.Format(time.RFC3339Nano)
	}
	rc, err := docker.ContainerLogs(ctx, id, opts)
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", shortID(id), err)
	}
	defer rc.Close()
	// Without a TTY the engine multiplexes both streams into one, in frames.
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(rc, 1<<20)); err != nil {
		return nil, fmt.Errorf("logs of %s: %w", shortID(id), err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		if l = strings.TrimRight(l, "\r"); l == "" {
			continue
		}
		if len(l) > logLineMax {
			l = l[:logLineMax] + "…"
		}
		lines = append(lines, l)
	}
	if len(lines) > logLines {
		lines = lines[len(lines)-logLines:]
	}
	return lines, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
