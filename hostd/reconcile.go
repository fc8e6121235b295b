package hostd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"
	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// ReconcileOnce runs one converge pass: our containers and Consul registrations are
// brought to the last known assignment, new instances first, then the ones that go.
// Without any assignment yet (none persisted, Consul not reached) it touches nothing.
func (d *Daemon) ReconcileOnce(ctx context.Context) error {
	_, err := d.reconcile(ctx)
	return err
}

// pass is one converge pass in progress: what it saw, and what became of each instance.
type pass struct {
	now      time.Time
	releases map[string]*state.Release // by release ID, those that could be read
	relErr   map[string]error          // by release ID, why one could not
	agent    *agentView                // nil when the agent does not answer
	wake     time.Time                 // when a failed pull is tried again (zero: none)

	mu      sync.Mutex
	running map[string]observed // instance → its running container, after the pass
	notes   map[string]string   // instance → why it has no container yet
	// left are the registrations removed in this pass, by instance: what drains waits
	// to see gone from the servers' catalog before it stops a container.
	left map[string]*api.AgentService
	errs []error
	// tasks and volumes are what the host reports of its one-off tasks and volumes.
	tasks   []state.TaskStatus
	volumes []state.VolumeStatus
}

func (p *pass) agentOK() bool { return p.agent != nil }

func (p *pass) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// agentView is what the local Consul agent has of this host's instances.
type agentView struct {
	host     string
	services map[string]*api.AgentService // by instance ID (their meta's), ours only
	checks   map[string]*api.AgentCheck   // by check ID
}

// reconcile is ReconcileOnce, and returns when the next pass is due (zero: at the next
// event or resync).
func (d *Daemon) reconcile(ctx context.Context) (time.Time, error) {
	d.pass.Lock()
	defer d.pass.Unlock()
	d.mu.Lock()
	a := d.assignment
	in := planInput{
		Known: maps.Clone(d.known), History: maps.Clone(d.history), StrayAt: maps.Clone(d.strayAt),
		Grace: d.cfg.OrphanGrace, StableAfter: d.cfg.StableAfter, Confirmed: d.confirmed,
		UnhealthyAfter: d.cfg.UnhealthyAfter,
	}
	d.mu.Unlock()
	if a == nil {
		return time.Time{}, nil
	}

	containers, err := d.observe(ctx)
	if err != nil {
		return time.Time{}, err
	}
	p := &pass{now: time.Now(), running: map[string]observed{}, notes: map[string]string{}, left: map[string]*api.AgentService{}}
	p.releases, p.relErr = d.releasesOf(ctx, a.Instances)
	if p.agent, err = d.readAgent(ctx); err != nil {
		p.fail(err)
	}

	in.Now, in.Assigned, in.Containers = p.now, a.Instances, containers
	in.CanRemove = p.agent != nil
	in.Restart = map[string]state.Restart{}
	in.CheckGrace = map[string]time.Duration{}
	for id, rel := range p.releases {
		in.Restart[id] = rel.Restart
		if checked(rel) {
			in.CheckGrace[id] = rel.Check.Grace
		}
	}
	in.Health = map[string]string{}
	if p.agent != nil {
		for _, inst := range a.Instances {
			if c := p.agent.checks[state.CheckID(d.cfg.ID, inst.ID)]; c != nil && p.agent.services[inst.ID] != nil {
				in.Health[inst.ID] = c.Status
			}
		}
	}
	plan := decide(in)
	d.recordExits(ctx, plan)
	d.forget(a, containers)

	byID := make(map[string]state.Instance, len(a.Instances))
	for _, inst := range a.Instances {
		byID[inst.ID] = inst
	}
	for _, c := range plan.Keep {
		p.running[c.Instance] = c
	}

	// New and restarted instances first, then the ones that go: start before stop.
	var tasks []func()
	for _, inst := range d.readyToCreate(ctx, p, d.slotsFree(p, plan.Create, containers)) {
		tasks = append(tasks, func() { d.create(ctx, p, inst) })
	}
	for _, c := range plan.Start {
		tasks = append(tasks, func() { d.start(ctx, p, byID[c.Instance], c) })
	}
	parallel(d.cfg.Parallel, tasks)
	// Registrations before removals: what goes leaves the catalog here, before it stops.
	registered := d.syncRegistrations(ctx, p, byID)
	tasks = tasks[:0]
	for _, c := range plan.Remove {
		tasks = append(tasks, func() { d.drain(ctx, p, c, byID[c.Instance].ID != "") })
	}
	// Unhealthy ones left the catalog above (they do not count as running): stop them.
	for _, c := range plan.Unhealthy {
		tasks = append(tasks, func() { d.stopUnhealthy(ctx, p, c) })
	}
	parallel(d.cfg.Parallel, tasks)
	p.tasks = d.runTasks(ctx, p, a)
	p.volumes = d.volumesPass(ctx, p, a)
	p.wake = earliest(p.wake, d.collectImages(ctx, p))

	d.networking(ctx, a, containers, p)

	wake := earliest(d.report(ctx, a, plan, p, registered), plan.Wake, p.wake)
	d.noteConverged(a, plan, p, registered)
	return wake, errors.Join(p.errs...)
}

// observe lists our containers: only those that carry our host label. The ones not
// running are inspected for how their last run ended.
func (d *Daemon) observe(ctx context.Context) ([]observed, error) {
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
		if c.NetworkSettings != nil {
			o.IP = networkIP(c.NetworkSettings.Networks, d.cfg.ID, c.Labels[LabelFormation])
		}
		for _, port := range c.Ports {
			if port.PublicPort != 0 && port.Type == "tcp" {
				o.HostPorts[int(port.PrivatePort)] = int(port.PublicPort)
			}
		}
		if o.State != "running" {
			info, err := d.docker.ContainerInspect(ctx, c.ID)
			if errdefs.IsNotFound(err) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("inspect container %s: %w", shortID(c.ID), err)
			}
			if s := info.State; s != nil {
				o.ExitCode, o.OOMKilled = s.ExitCode, s.OOMKilled
				o.StartedAt, _ = time.Parse(time.RFC3339Nano, s.StartedAt)
				o.FinishedAt, _ = time.Parse(time.RFC3339Nano, s.FinishedAt)
			}
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// readAgent reads our instances' registrations and checks from the local agent.
func (d *Daemon) readAgent(ctx context.Context) (*agentView, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	agent := d.store.Client().Agent()
	q := (&api.QueryOptions{}).WithContext(ctx)
	services, err := agent.ServicesWithFilterOpts(fmt.Sprintf("Meta.host == %q and %q in Tags", d.cfg.ID, TagInstance), q)
	if err != nil {
		return nil, fmt.Errorf("consul agent: %w", err)
	}
	for id, s := range services {
		if names.InstallationOf(s.Meta[names.MetaInstallation]) != d.store.Installation() {
			delete(services, id) // another installation's host daemon of the same host ID
		}
	}
	checks, err := agent.ChecksWithFilterOpts("", q)
	if err != nil {
		return nil, fmt.Errorf("consul agent: %w", err)
	}
	byInstance := make(map[string]*api.AgentService, len(services))
	for _, s := range services {
		key := s.Meta["instance"]
		if key == "" {
			key = s.ID // ours by its tag and host, but not as we make them: stale
		}
		byInstance[key] = s
	}
	return &agentView{host: d.cfg.ID, services: byInstance, checks: checks}, nil
}

// releasesOf returns the releases of instances, from memory, the data dir or Consul.
func (d *Daemon) releasesOf(ctx context.Context, instances []state.Instance) (map[string]*state.Release, map[string]error) {
	found, failed := map[string]*state.Release{}, map[string]error{}
	for _, inst := range instances {
		if found[inst.Release] != nil || failed[inst.Release] != nil {
			continue
		}
		if rel, err := d.release(ctx, inst.Formation, inst.Release); err != nil {
			failed[inst.Release] = err
		} else {
			found[inst.Release] = rel
		}
	}
	return found, failed
}

// release reads a release: from memory when seen before, else from the data dir, else from
// Consul (and then kept in both). Releases are immutable, so no copy is ever stale.
func (d *Daemon) release(ctx context.Context, formation, id string) (*state.Release, error) {
	d.mu.Lock()
	r := d.releases[id]
	d.mu.Unlock()
	if r != nil {
		return r, nil
	}
	r, err := d.disk.loadRelease(id)
	if err != nil {
		d.log.Warn("persisted release unreadable", "release", id, "err", err)
	}
	if r == nil {
		ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
		defer cancel()
		if r, err = d.store.Release(ctx, formation, id); err != nil {
			return nil, err
		}
		if r == nil {
			return nil, fmt.Errorf("release %s of %s not found", id, formation)
		}
		if err := d.disk.saveRelease(r); err != nil {
			d.log.Warn("persist release", "release", id, "err", err)
		}
	}
	if r, err = d.withConfig(ctx, r); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.releases[id] = r
	d.mu.Unlock()
	return r, nil
}

// restartIn is how long until next, for a log line: 0 once it has passed (reading an
// exited container's logs on a busy engine can take longer than its backoff).
func restartIn(next time.Time) time.Duration {
	return max(0, time.Until(next)).Round(time.Millisecond)
}

// recordExits keeps the plan's history and strays, and reads the last log lines of the
// instances that exited since the last pass.
func (d *Daemon) recordExits(ctx context.Context, plan plan) {
	logs := map[string][]string{}
	for _, c := range plan.Exited {
		lines, err := lastLogs(ctx, d.docker, c.ID, c.StartedAt)
		if err != nil {
			lines = []string{"(" + err.Error() + ")"}
		}
		logs[c.Instance] = lines
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, lines := range logs {
		h := plan.History[id]
		h.Logs = lines
		plan.History[id] = h
	}
	d.history, d.strayAt = plan.History, plan.StrayAt
	for _, c := range plan.Exited {
		h := plan.History[c.Instance]
		attrs := []any{"instance", c.Instance, "exit_code", c.ExitCode, "crashes", h.Failures, "restart_in", restartIn(h.NextStart)}
		if c.OOMKilled {
			attrs = append(attrs, "oom_killed", true)
		}
		switch {
		case h.Failures < crashLoop:
			d.log.Info("instance exited", attrs...)
		case h.Failures == crashLoop:
			d.log.Warn("instance crash-looping", append(attrs, "last_log", lastLine(h.Logs))...)
		default:
			d.log.Debug("instance exited", attrs...)
		}
	}
}

// forget drops what no assigned instance and no container needs any more: known
// instances whose removal is done, releases and images no longer used.
func (d *Daemon) forget(a *state.Assignment, containers []observed) {
	instances, releases := map[string]bool{}, map[string]bool{}
	for _, inst := range a.Instances {
		instances[inst.ID], releases[inst.Release] = true, true
	}
	for _, c := range containers {
		instances[c.Instance], releases[c.Release] = true, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.assignment != a {
		return // a new one came meanwhile: the next pass forgets
	}
	for id := range d.known {
		if !instances[id] {
			delete(d.known, id)
		}
	}
	images := map[string]bool{}
	for id, rel := range d.releases {
		if releases[id] {
			images[rel.Image] = true
		} else {
			delete(d.releases, id)
		}
	}
	d.pulls.retain(images)
}

// readyToCreate returns the instances whose release and image are here, and notes why the
// others wait. Each image is asked for once, however many instances need it.
func (d *Daemon) readyToCreate(ctx context.Context, p *pass, create []state.Instance) []state.Instance {
	var ready []state.Instance
	images := map[string]pullStatus{}
	for _, inst := range create {
		rel := p.releases[inst.Release]
		if rel == nil {
			p.notes[inst.ID] = fmt.Sprintf("release unknown: %v", p.relErr[inst.Release])
			continue
		}
		st, ok := images[rel.Image]
		if !ok {
			st = d.pulls.ensure(ctx, rel.Image, p.now)
			images[rel.Image] = st
		}
		switch {
		case st.Ready:
			ready = append(ready, inst)
		case st.Err != nil:
			p.notes[inst.ID] = fmt.Sprintf("pull failed, retrying: %v", st.Err)
			p.wake = earliest(p.wake, st.RetryAt)
		default:
			p.notes[inst.ID] = "pulling"
		}
	}
	return ready
}

// create creates and starts an instance's container, and registers it.
func (d *Daemon) create(ctx context.Context, p *pass, inst state.Instance) {
	rel := p.releases[inst.Release]
	// The image's own user decides whether the instance runs as nobody.
	img, err := d.docker.ImageInspect(ctx, rel.Image)
	if err != nil {
		if errdefs.IsNotFound(err) {
			d.pulls.forget(rel.Image) // the image went away since it was seen
		}
		d.startFailed(p, inst, fmt.Errorf("inspect image %s: %w", rel.Image, err))
		return
	}
	priv := privileges{PidsLimit: d.cfg.PidsLimit}
	if img.Config != nil {
		priv.ImageUser = img.Config.User
	}
	cfg, hc := containerSpec(d.cfg.ID, d.cfg.Advertise, inst, rel, priv)
	n, err := d.network(ctx, inst.Formation)
	if err != nil {
		d.startFailed(p, inst, err)
		return
	}
	attach(cfg, hc, rel, n)
	if len(rel.Volumes) > 0 {
		user := cfg.User
		if user == "" {
			user = priv.ImageUser
		}
		mounts, err := d.volumeMounts(ctx, inst, rel, user)
		if err != nil {
			d.startFailed(p, inst, err)
			return
		}
		hc.Mounts = append(hc.Mounts, mounts...)
	}
	cctx, cancel := settled(ctx)
	created, err := d.docker.ContainerCreate(cctx, cfg, hc, nil, nil, state.ContainerName(d.cfg.ID, inst.ID))
	cancel()
	if err != nil {
		if errdefs.IsNotFound(err) {
			d.pulls.forget(rel.Image) // the image went away since it was seen
		}
		d.startFailed(p, inst, fmt.Errorf("create container: %w", err))
		return
	}
	c, err := d.startContainer(ctx, inst, created.ID)
	if err != nil {
		d.startFailed(p, inst, err)
		return
	}
	d.log.Info("instance started", "instance", inst.ID, "release", inst.Release, "container", shortID(c.ID), "image", rel.Image)
	d.markRunning(ctx, p, inst, c, false)
}

// start starts an instance's container again: after an exit (its backoff over), or one
// that was created and never started.
func (d *Daemon) start(ctx context.Context, p *pass, inst state.Instance, c observed) {
	running, err := d.startContainer(ctx, inst, c.ID)
	if err != nil {
		d.startFailed(p, inst, err)
		return
	}
	restart := c.State == "exited"
	if restart {
		d.mu.Lock()
		h := d.history[inst.ID]
		d.mu.Unlock()
		d.log.Debug("instance restarted", "instance", inst.ID, "container", shortID(c.ID), "crashes", h.Failures)
	} else {
		d.log.Info("instance started", "instance", inst.ID, "release", inst.Release, "container", shortID(c.ID))
	}
	d.markRunning(ctx, p, inst, running, restart)
}

func (d *Daemon) startContainer(ctx context.Context, inst state.Instance, id string) (observed, error) {
	if err := d.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return observed{}, fmt.Errorf("start container %s: %w", shortID(id), err)
	}
	// The engine picks the host ports at start: read them back.
	info, err := d.docker.ContainerInspect(ctx, id)
	if err != nil {
		return observed{}, fmt.Errorf("inspect container %s: %w", shortID(id), err)
	}
	o := observed{ID: id, Instance: inst.ID, Release: inst.Release, State: "running", HostPorts: map[int]int{}}
	if info.NetworkSettings != nil {
		o.IP = networkIP(info.NetworkSettings.Networks, d.cfg.ID, inst.Formation)
		for port, bindings := range info.NetworkSettings.Ports {
			for _, b := range bindings {
				if hp, err := strconv.Atoi(b.HostPort); err == nil {
					o.HostPorts[port.Int()] = hp
				}
			}
		}
	}
	return o, nil
}

// markRunning records a container that now runs, and registers it at once rather than
// after the pass: the first instances of a large assignment serve while the last start.
func (d *Daemon) markRunning(ctx context.Context, p *pass, inst state.Instance, c observed, restart bool) {
	d.mu.Lock()
	h := d.history[inst.ID]
	h.Error = ""
	h.NextStart = time.Time{}
	h.Started = time.Now()
	h.CriticalSince, h.HealthySince, h.StableBefore = time.Time{}, time.Time{}, false
	if restart {
		h.Restarts++
	}
	d.history[inst.ID] = h
	d.mu.Unlock()
	if restart {
		reason := h.Reason
		if reason == "" {
			reason = "crash"
		}
		d.cfg.Metrics.Restart(d.cfg.ID, inst.Formation, inst.Service, reason)
	}
	p.mu.Lock()
	p.running[inst.ID] = c
	p.mu.Unlock()
	rel := p.releases[inst.Release]
	if p.agent == nil || rel == nil {
		return
	}
	reg := d.registrationOf(inst, rel, c)
	if err := d.register(ctx, reg); err != nil {
		p.fail(err)
		return
	}
	p.mu.Lock()
	p.agent.services[inst.ID] = &api.AgentService{ID: reg.ID, Meta: reg.Meta}
	p.mu.Unlock()
}

func (d *Daemon) register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	// Through Raw: the API's registration type cannot say DisableRedirects.
	if _, err := d.store.Client().Raw().Write("/v1/agent/service/register", definition(reg), nil, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("register %s in Consul: %w", reg.ID, err)
	}
	d.log.Info("instance registered in Consul", "instance", reg.ID, "service", reg.Name, "port", reg.Port)
	return nil
}

// startFailed records a create or start that failed: it is retried with the release's
// restart backoff, and status shows why.
func (d *Daemon) startFailed(p *pass, inst state.Instance, err error) {
	var pol state.Restart
	if rel := p.releases[inst.Release]; rel != nil {
		pol = rel.Restart
	}
	d.mu.Lock()
	h := failedStart(d.history[inst.ID], pol, time.Now(), err)
	d.history[inst.ID] = h
	d.mu.Unlock()
	if h.Failures == 1 {
		d.log.Warn("instance failed to start", "instance", inst.ID, "err", err)
	}
	p.fail(fmt.Errorf("instance %s: %w", inst.ID, err))
}

// stopUnhealthy stops a running instance whose check stayed critical too long; its
// registration went in this pass. It is started again after its backoff, like a crash.
func (d *Daemon) stopUnhealthy(ctx context.Context, p *pass, c observed) {
	d.mu.Lock()
	h := d.history[c.Instance]
	d.mu.Unlock()
	d.log.Warn("instance unhealthy: restarting", "instance", c.Instance, "container", shortID(c.ID),
		"unhealthy_after", d.cfg.UnhealthyAfter, "unhealthy_restarts", h.Unhealthy, "restart_in", restartIn(h.NextStart))
	secs := int((d.cfg.StopTimeout + time.Second - 1) / time.Second)
	if err := d.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs}); err != nil && !errdefs.IsNotFound(err) {
		p.fail(fmt.Errorf("stop unhealthy %s: %w", c.Instance, err))
	}
}

// drain takes an instance out: out of Consul first, so that no one is sent to it, then
// SIGTERM, the stop timeout, SIGKILL, and the container removed. When the agent does not
// answer, the instance keeps running until it does.
func (d *Daemon) drain(ctx context.Context, p *pass, c observed, assigned bool) {
	p.mu.Lock()
	reg, registered := p.agent.services[c.Instance]
	left := p.left[c.Instance] // deregistered earlier in this pass
	p.mu.Unlock()
	if registered {
		if err := d.deregister(ctx, reg.ID); err != nil {
			p.fail(err)
			return
		}
		left = reg
	}
	if left != nil && c.State == "running" && d.cfg.DrainDelay > 0 {
		// New requests stop coming before the app is told to stop: routers follow the
		// servers' catalog, which learns of the deregistration a little after the agent.
		if err := d.store.WaitLeftCatalog(ctx, left.Service, left.ID, 5*time.Second); err != nil {
			d.log.Debug("drain: the catalog still lists the instance", "instance", c.Instance, "err", err)
		}
		sleep(ctx, d.cfg.DrainDelay)
	}
	secs := int((d.cfg.StopTimeout + time.Second - 1) / time.Second)
	if err := d.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &secs}); err != nil && !errdefs.IsNotFound(err) {
		p.fail(fmt.Errorf("stop %s: %w", c.Instance, err))
		return
	}
	d.archiveLogs(ctx, c.ID)
	if err := d.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		p.fail(fmt.Errorf("remove %s: %w", c.Instance, err))
		return
	}
	why := "not assigned"
	switch {
	case assigned && c.State == "dead":
		why = "dead"
	case assigned:
		why = "duplicate"
	}
	d.log.Info("instance stopped", "instance", c.Instance, "container", shortID(c.ID), "why", why)
}

// syncRegistrations makes the agent's registrations of our instances what they should be:
// every running assigned instance registered as it runs now (a restart may change its
// port), nothing else. Comparing with what the agent has, rather than with what this
// daemon remembers registering, makes registrations the agent lost come back. It returns
// the instances registered as they should be.
func (d *Daemon) syncRegistrations(ctx context.Context, p *pass, byID map[string]state.Instance) map[string]bool {
	registered := map[string]bool{}
	if p.agent == nil {
		return registered
	}
	want := map[string]*api.AgentServiceRegistration{}
	for id, c := range p.running {
		inst, ok := byID[id]
		if !ok {
			continue
		}
		rel := p.releases[inst.Release]
		if rel == nil {
			want[id] = nil // keep what the agent has until the release can be read
			continue
		}
		want[id] = d.registrationOf(inst, rel, c)
	}
	register, deregister := registrationChanges(want, p.agent.services)
	for id, reg := range want {
		if reg != nil {
			registered[id] = true
		}
	}
	for _, reg := range register {
		registered[reg.Meta["instance"]] = false
	}

	var tasks []func()
	for _, reg := range register {
		tasks = append(tasks, func() {
			if err := d.register(ctx, reg); err != nil {
				p.fail(err)
				return
			}
			p.mu.Lock()
			registered[reg.Meta["instance"]] = true
			p.mu.Unlock()
		})
	}
	for _, id := range deregister {
		regID := p.agent.services[id].ID
		tasks = append(tasks, func() {
			if err := d.deregister(ctx, regID); err != nil {
				p.fail(err)
				return
			}
			p.mu.Lock()
			p.left[id] = p.agent.services[id]
			delete(p.agent.services, id)
			p.mu.Unlock()
			d.log.Info("instance deregistered from Consul", "instance", id)
		})
	}
	parallel(d.cfg.Parallel, tasks)
	return registered
}

func (d *Daemon) deregister(ctx context.Context, registration string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	err := d.store.Client().Agent().ServiceDeregisterOpts(registration, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("deregister %s from Consul: %w", registration, err)
	}
	return nil
}

// primaryPort is the host port an instance's primary port is published on (0 without
// ports).
func primaryPort(rel *state.Release, c observed) int {
	if len(rel.Ports) == 0 {
		return 0
	}
	return c.HostPorts[rel.Ports[0].Port]
}

// noteConverged logs when the host reaches its assignment: every instance running and
// registered, nothing left to remove.
func (d *Daemon) noteConverged(a *state.Assignment, plan plan, p *pass, registered map[string]bool) {
	ok := p.agent != nil && len(plan.Remove) == 0 && len(p.errs) == 0
	for _, inst := range a.Instances {
		ok = ok && registered[inst.ID]
	}
	d.mu.Lock()
	changed := ok != d.converged
	d.converged = ok
	d.mu.Unlock()
	if changed && ok {
		d.log.Info("converged", "instances", len(a.Instances))
	}
}

// parallel runs tasks, at most n at a time, and waits for all of them.
func parallel(n int, tasks []func()) {
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, task := range tasks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			task()
		}()
	}
	wg.Wait()
}

// earliest is the earliest of times, zero ones left out (zero when all are).
func earliest(times ...time.Time) time.Time {
	var e time.Time
	for _, t := range times {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

func lastLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

func address(advertise string, port int) string {
	if port == 0 {
		return ""
	}
	return net.JoinHostPort(advertise, strconv.Itoa(port))
}
