package hostd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"
	"github.com/docker/go-connections/nat"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// One-off tasks: the release phases the assignment lists (Assignment.Tasks). A task's
// container is the release's (its image, env, limits and privileges), running the
// release phase's command instead of the service's, on the formation's network, without
// ports, volumes or a Consul registration. It runs once: its container is kept after it ends, so a restarted daemon
// reports the same end, and removed when the task leaves the assignment. A task that runs
// past its timeout is killed and reported failed.

// LabelTask marks a task's container with the task's ID (in place of LabelInstance, so
// the converge pass never takes it for an instance).
const LabelTask = "io.gilliam.task"

// taskMemory is what the daemon remembers of tasks between passes; only the converge
// pass (one at a time) touches it.
type taskMemory struct {
	ended  map[string]state.TaskStatus // by task ID: its end, read once
	killed map[string]bool             // by task ID: killed for its timeout
	// idle says the last pass found no task assigned and no task container: passes skip
	// the engine until a task is assigned again.
	idle bool
}

// runTasks brings the assignment's tasks forward (pull, create, start, time out, read
// their end) and removes the containers of tasks no longer assigned. It returns their
// status, for the host's report.
func (d *Daemon) runTasks(ctx context.Context, p *pass, a *state.Assignment) []state.TaskStatus {
	m := &d.taskMem
	if m.ended == nil {
		m.ended, m.killed = map[string]state.TaskStatus{}, map[string]bool{}
	}
	if m.idle && len(a.Tasks) == 0 {
		return nil
	}
	list, err := d.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelHost+"="+d.cfg.ID), filters.Arg("label", LabelTask))})
	if err != nil {
		p.fail(fmt.Errorf("list task containers: %w", err))
		return nil
	}
	byTask := map[string]container.Summary{}
	for _, c := range list {
		byTask[c.Labels[LabelTask]] = c
	}
	assigned := map[string]bool{}
	var out []state.TaskStatus
	for _, t := range a.Tasks {
		assigned[t.ID] = true
		st := d.task(ctx, p, t, byTask[t.ID])
		out = append(out, st)
	}
	for id, c := range byTask {
		if assigned[id] || !p.agentOK() {
			continue
		}
		if err := d.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
			p.fail(fmt.Errorf("remove task %s: %w", id, err))
			continue
		}
		delete(m.ended, id)
		delete(m.killed, id)
		d.log.Info("task container removed", "task", id)
	}
	slices.SortFunc(out, func(a, b state.TaskStatus) int { return strings.Compare(a.ID, b.ID) })
	m.idle = len(a.Tasks) == 0 && len(list) == 0
	return out
}

// task moves one task a step and says where it is.
func (d *Daemon) task(ctx context.Context, p *pass, t state.Task, c container.Summary) state.TaskStatus {
	m := &d.taskMem
	st := state.TaskStatus{ID: t.ID, Release: t.Release, State: state.TaskWaiting}
	if end, ok := m.ended[t.ID]; ok && c.ID != "" {
		return end
	}
	rel, err := d.release(ctx, t.Formation, t.Release)
	if err != nil {
		st.Error = fmt.Sprintf("release unknown: %v", err)
		return st
	}
	if rel.Phase == nil {
		st.State, st.Error = state.TaskFailed, "the release has no release phase"
		return st
	}
	timeout := rel.Phase.Timeout
	if c.ID == "" {
		pull := d.pulls.ensure(ctx, rel.Image, p.now)
		switch {
		case pull.Err != nil:
			st.Error = fmt.Sprintf("pull failed, retrying: %v", pull.Err)
			p.wake = earliest(p.wake, pull.RetryAt)
			return st
		case !pull.Ready:
			st.Error = "pulling"
			return st
		}
		id, err := d.createTask(ctx, t, rel)
		if err != nil {
			st.State, st.Error, st.Ended = state.TaskFailed, err.Error(), p.now.UTC()
			return st
		}
		c = container.Summary{ID: id, State: "created"}
	}
	if c.State == "created" {
		if err := d.docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
			st.State, st.Error, st.Ended = state.TaskFailed, fmt.Sprintf("start: %v", err), p.now.UTC()
			return st
		}
		d.log.Info("release phase started", "task", t.ID, "release", t.Release, "command", strings.Join(rel.Phase.Command, " "))
		p.wake = earliest(p.wake, p.now.Add(timeout))
		st.State, st.Started = state.TaskRunning, p.now.UTC()
		return st
	}
	info, err := d.docker.ContainerInspect(ctx, c.ID)
	if err != nil || info.State == nil {
		st.Error = fmt.Sprintf("inspect: %v", err)
		return st
	}
	started, _ := time.Parse(time.RFC3339Nano, info.State.StartedAt)
	st.Started = started.UTC()
	if info.State.Running {
		st.State = state.TaskRunning
		if deadline := started.Add(timeout); !p.now.Before(deadline) {
			zero := 0
			m.killed[t.ID] = true
			if err := d.docker.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &zero}); err != nil && !errdefs.IsNotFound(err) {
				p.fail(fmt.Errorf("kill task %s: %w", t.ID, err))
			}
			p.wake = earliest(p.wake, p.now.Add(200*time.Millisecond))
		} else {
			p.wake = earliest(p.wake, deadline)
		}
		return st
	}
	// It ended: read how, once.
	finished, _ := time.Parse(time.RFC3339Nano, info.State.FinishedAt)
	st.Ended, st.ExitCode = finished.UTC(), info.State.ExitCode
	st.State = state.TaskExited
	if st.Output, err = lastLogs(ctx, d.docker, c.ID, time.Time{}); err != nil {
		st.Output = []string{"(" + err.Error() + ")"}
	}
	if m.killed[t.ID] || finished.Sub(started) >= timeout {
		st.State, st.Error = state.TaskFailed, fmt.Sprintf("timed out after %s: killed", timeout)
	}
	m.ended[t.ID] = st
	d.log.Info("release phase ended", "task", t.ID, "state", st.State, "exit_code", st.ExitCode, "took", finished.Sub(started).Round(time.Millisecond))
	return st
}

// createTask creates a task's container: the release's, with the release phase's command,
// no ports and no instance label.
func (d *Daemon) createTask(ctx context.Context, t state.Task, rel *state.Release) (string, error) {
	img, err := d.docker.ImageInspect(ctx, rel.Image)
	if err != nil {
		return "", fmt.Errorf("inspect image %s: %w", rel.Image, err)
	}
	priv := privileges{PidsLimit: d.cfg.PidsLimit}
	if img.Config != nil {
		priv.ImageUser = img.Config.User
	}
	inst := state.Instance{ID: t.ID, Formation: t.Formation, Service: t.Service, Release: t.Release}
	cfg, hc := containerSpec(d.cfg.ID, d.cfg.Advertise, inst, rel, priv)
	// On the formation's network, with its siblings' names: a migration reaches the store.
	n, err := d.network(ctx, t.Formation)
	if err != nil {
		return "", err
	}
	attach(cfg, hc, rel, n)
	delete(cfg.Labels, LabelInstance)
	cfg.Labels[LabelTask] = t.ID
	cfg.Entrypoint, cfg.Cmd = rel.Phase.Entrypoint, rel.Phase.Command
	cfg.ExposedPorts, hc.PortBindings = nat.PortSet{}, nat.PortMap{}
	cfg.Env = slices.DeleteFunc(cfg.Env, func(e string) bool { return strings.HasPrefix(e, "GILLIAM_INSTANCE=") })
	cfg.Env = append(cfg.Env, "GILLIAM_RELEASE_PHASE=1")
	cctx, cancel := settled(ctx)
	created, err := d.docker.ContainerCreate(cctx, cfg, hc, nil, nil, state.ContainerName(d.cfg.ID, t.ID))
	cancel()
	if err != nil {
		return "", fmt.Errorf("create container: %w", err)
	}
	return created.ID, nil
}
