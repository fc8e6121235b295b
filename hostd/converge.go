package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sort"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// observed is one of our containers as the engine reports it.
type observed struct {
	ID       string
	Instance string
	Release  string
	State    string // created, running, exited, dead, ...
	// HostPorts maps container ports to the host ports they are published on.
	HostPorts map[int]int
}

// actions is what one converge pass must do.
type actions struct {
	create []state.Instance // no container yet
	start  []observed       // a container that is not running
	remove []observed       // not assigned (any more), or a duplicate
	keep   []observed       // running as it should
}

// diff compares the assignment with our containers: pure, so every case is a table test.
func diff(assigned []state.Instance, containers []observed) actions {
	var a actions
	byInstance := map[string]observed{}
	for _, c := range containers {
		if _, dup := byInstance[c.Instance]; dup {
			a.remove = append(a.remove, c)
			continue
		}
		byInstance[c.Instance] = c
	}
	want := map[string]bool{}
	for _, inst := range assigned {
		want[inst.ID] = true
		c, ok := byInstance[inst.ID]
		switch {
		case !ok:
			a.create = append(a.create, inst)
		case c.State != "running":
			a.start = append(a.start, c)
		default:
			a.keep = append(a.keep, c)
		}
	}
	for _, c := range containers {
		if !want[c.Instance] && byInstance[c.Instance].ID == c.ID {
			a.remove = append(a.remove, c)
		}
	}
	return a
}

// ReconcileOnce converges the host's containers and Consul registrations to the last known
// assignment: new instances start before removed ones stop. Without any assignment yet
// (none persisted, Consul not reached) it touches nothing.
func (d *Daemon) ReconcileOnce(ctx context.Context) error {
	d.mu.Lock()
	assignment := d.assignment
	d.mu.Unlock()
	if assignment == nil {
		return nil
	}
	containers, err := d.ours(ctx)
	if err != nil {
		return err
	}
	plan := diff(assignment.Instances, containers)
	byID := make(map[string]state.Instance, len(assignment.Instances))
	for _, inst := range assignment.Instances {
		byID[inst.ID] = inst
	}
	statuses := map[string]state.InstanceStatus{}
	var errs []error

	for _, inst := range plan.create {
		st, err := d.startInstance(ctx, inst)
		statuses[inst.ID] = st
		errs = append(errs, err)
	}
	for _, c := range plan.start {
		err := d.docker.ContainerStart(ctx, c.ID, container.StartOptions{})
		if err == nil {
			d.log.Info("container restarted", "instance", c.Instance, "container", c.ID[:12])
		}
		errs = append(errs, wrap(err, "start %s", c.Instance))
	}
	for _, c := range plan.keep {
		st, err := d.ensureRegistered(ctx, byID[c.Instance], c)
		statuses[c.Instance] = st
		errs = append(errs, err)
	}
	for _, c := range plan.remove {
		errs = append(errs, d.stopInstance(ctx, c))
	}
	d.reportStatus(ctx, assignment, statuses)
	return errors.Join(errs...)
}

// ours lists the containers of this host: only those carrying our host label.
func (d *Daemon) ours(ctx context.Context) ([]observed, error) {
	list, err := d.docker.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelHost+"="+d.cfg.ID)),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]observed, 0, len(list))
	for _, c := range list {
		o := observed{ID: c.ID, Instance: c.Labels[LabelInstance], Release: c.Labels[LabelRelease], State: string(c.State), HostPorts: map[int]int{}}
		if o.Instance == "" {
			continue
		}
		for _, p := range c.Ports {
			if p.PublicPort != 0 && p.Type == "tcp" {
				o.HostPorts[int(p.PrivatePort)] = int(p.PublicPort)
			}
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// release returns a release, from memory when seen before: releases are immutable.
func (d *Daemon) release(ctx context.Context, inst state.Instance) (*state.Release, error) {
	d.mu.Lock()
	r := d.releases[inst.Release]
	d.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := d.store.Release(ctx, inst.Formation, inst.Release)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("release %s of %s not found", inst.Release, inst.Formation)
	}
	d.mu.Lock()
	d.releases[inst.Release] = r
	d.mu.Unlock()
	return r, nil
}

func (d *Daemon) startInstance(ctx context.Context, inst state.Instance) (state.InstanceStatus, error) {
	st := state.InstanceStatus{ID: inst.ID, Release: inst.Release, State: "pending"}
	fail := func(err error) (state.InstanceStatus, error) {
		st.State, st.Error = "failed", err.Error()
		return st, fmt.Errorf("instance %s: %w", inst.ID, err)
	}
	rel, err := d.release(ctx, inst)
	if err != nil {
		return fail(err)
	}
	if err := d.pull(ctx, rel.Image); err != nil {
		return fail(err)
	}
	cfg, hc := containerSpec(d.cfg.ID, d.cfg.Advertise, inst, rel)
	created, err := d.docker.ContainerCreate(ctx, cfg, hc, nil, nil, ContainerName(inst.ID))
	if err != nil {
		return fail(fmt.Errorf("create container: %w", err))
	}
	if err := d.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fail(fmt.Errorf("start container %s: %w", created.ID[:12], err))
	}
	d.log.Info("container started", "instance", inst.ID, "release", inst.Release, "container", created.ID[:12], "image", rel.Image)
	info, err := d.docker.ContainerInspect(ctx, created.ID)
	if err != nil {
		return fail(err)
	}
	o := observed{ID: created.ID, Instance: inst.ID, Release: inst.Release, State: "running", HostPorts: map[int]int{}}
	if info.NetworkSettings != nil {
		for port, bindings := range info.NetworkSettings.Ports {
			for _, b := range bindings {
				if hp, err := strconv.Atoi(b.HostPort); err == nil {
					o.HostPorts[port.Int()] = hp
				}
			}
		}
	}
	return d.ensureRegistered(ctx, inst, o)
}

// ensureRegistered registers a running instance in the local Consul agent, unless it is
// registered already as it is now.
func (d *Daemon) ensureRegistered(ctx context.Context, inst state.Instance, c observed) (state.InstanceStatus, error) {
	st := state.InstanceStatus{ID: inst.ID, Release: inst.Release, Container: shortID(c.ID), State: c.State}
	rel, err := d.release(ctx, inst)
	if err != nil {
		st.Error = err.Error()
		return st, err
	}
	hostPort := 0
	if len(rel.Ports) > 0 {
		hostPort = c.HostPorts[rel.Ports[0].Port]
		st.Address = net.JoinHostPort(d.cfg.Advertise, strconv.Itoa(hostPort))
	}
	want := registeredInstance{container: c.ID, hostPort: hostPort}
	d.mu.Lock()
	have, ok := d.registered[inst.ID]
	d.mu.Unlock()
	if ok && have == want {
		return st, nil
	}
	reg := registration(d.cfg.ID, d.cfg.Advertise, inst, rel, hostPort, d.cfg.DeregisterAfter)
	if err := d.store.Client().Agent().ServiceRegisterOpts(reg, (api.ServiceRegisterOpts{}).WithContext(ctx)); err != nil {
		st.Error = err.Error()
		return st, fmt.Errorf("register %s in Consul: %w", inst.ID, err)
	}
	d.log.Info("instance registered in Consul", "instance", inst.ID, "service", reg.Name, "address", st.Address)
	d.mu.Lock()
	d.registered[inst.ID] = want
	d.mu.Unlock()
	return st, nil
}

// stopInstance drains an instance: out of Consul first, then SIGTERM, the stop timeout,
// SIGKILL, and the container removed.
func (d *Daemon) stopInstance(ctx context.Context, c observed) error {
	if err := d.store.Client().Agent().ServiceDeregisterOpts(c.Instance, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		d.log.Warn("deregister from Consul", "instance", c.Instance, "err", err)
	}
	d.mu.Lock()
	delete(d.registered, c.Instance)
	d.mu.Unlock()
	timeout := int(d.cfg.StopTimeout / time.Second)
	if err := d.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &timeout}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("stop %s: %w", c.Instance, err)
	}
	if err := d.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", c.Instance, err)
	}
	d.log.Info("container stopped and removed", "instance", c.Instance, "container", shortID(c.ID))
	return nil
}

// pull makes sure the engine has ref (pinned by digest), pulling it when absent.
func (d *Daemon) pull(ctx context.Context, ref string) error {
	if _, err := d.docker.ImageInspect(ctx, ref); err == nil {
		return nil
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	start := time.Now()
	rc, err := d.docker.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	d.log.Info("image pulled", "image", ref, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// reportStatus writes the host's status when it changed.
func (d *Daemon) reportStatus(ctx context.Context, a *state.Assignment, statuses map[string]state.InstanceStatus) {
	st := &state.HostStatus{Host: d.cfg.ID, Address: d.cfg.Advertise}
	for _, inst := range a.Instances {
		s, ok := statuses[inst.ID]
		if !ok {
			s = state.InstanceStatus{ID: inst.ID, Release: inst.Release, State: "pending"}
		}
		st.Instances = append(st.Instances, s)
	}
	d.mu.Lock()
	same := d.lastStatus != nil && reflect.DeepEqual(d.lastStatus.Instances, st.Instances)
	d.mu.Unlock()
	if same {
		return
	}
	st.Updated = time.Now().UTC()
	if err := d.store.PutHostStatus(ctx, st); err != nil {
		return // Consul away: the next pass reports
	}
	d.mu.Lock()
	d.lastStatus = st
	d.mu.Unlock()
}

func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
