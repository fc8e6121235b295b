package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// The one-off runner: a host daemon runs the one-off processes requested for its host in
// Consul (state.OneOff; `gilliam-sync run`, release phases). Each gets a container of its
// release like an instance's (env, user, limits, least privilege), with no published port
// and no Consul registration, labelled LabelOneOff instead of LabelInstance: the converge
// loop never sees it. Its output goes back through Consul in chunks when a requester is
// attached; its exit ends in the one-off's status. docs/oneoff.md is the user's guide.

// LabelOneOff marks a one-off's container, with the one-off's ID.
const LabelOneOff = "io.gilliam.oneoff"

// OneOffGrace is how long an attached one-off that ended waits for its requester to read
// its end and delete it, before the host deletes it.
const OneOffGrace = 10 * time.Minute

// outputFlush is how often output is written to Consul while a one-off writes; outputChunk
// the most one chunk holds (Consul's limit is 512 KB a value).
const (
	outputFlush = 100 * time.Millisecond
	outputChunk = 64 << 10
)

// oneOffDocker is what running one-offs needs of the engine beyond Docker.
type oneOffDocker interface {
	ContainerAttach(ctx context.Context, container string, options container.AttachOptions) (types.HijackedResponse, error)
	ContainerWait(ctx context.Context, containerID string, condition container.WaitCondition) (<-chan container.WaitResponse, <-chan error)
}

var oneOffName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// checkOneOff refuses a request whose names could not be a container's or a release's: the
// request is written by whoever may write the run prefix, and its ID names a container.
func checkOneOff(o *state.OneOff, host string) error {
	for what, v := range map[string]string{"id": o.ID, "formation": o.Formation, "service": o.Service} {
		if !oneOffName.MatchString(v) {
			return fmt.Errorf("one-off %q: its %s %q is not a DNS label", o.ID, what, v)
		}
	}
	if o.Host != host {
		return fmt.Errorf("one-off %s is for host %q", o.ID, o.Host)
	}
	return nil
}

// oneOffs follows this host's one-off requests and runs each once; a request deleted
// stops its container. It returns when ctx ends, leaving the containers running: the next
// daemon adopts them.
func (d *Daemon) oneOffs(ctx context.Context) {
	var (
		mu      sync.Mutex
		stops   = map[string]chan struct{}{} // running, by ID
		ended   = map[string]time.Time{}     // runs over, kept a while against stale answers
		wg      sync.WaitGroup
		latest  []*state.OneOff
		refused = map[string]bool{}
	)
	defer wg.Wait()
	fetch := func(ctx context.Context, index uint64) (uint64, error) {
		ctx, cancel := context.WithTimeout(ctx, d.cfg.WatchWait+d.cfg.WatchWait/16+d.cfg.ConsulTimeout)
		defer cancel()
		list, next, err := d.store.WaitOneOffs(ctx, d.cfg.ID, index, d.cfg.WatchWait)
		if err == nil {
			latest = list
		}
		return next, err
	}
	news := func() {
		mu.Lock()
		defer mu.Unlock()
		want := map[string]bool{}
		for _, o := range latest {
			want[o.ID] = true
			if stops[o.ID] != nil || !ended[o.ID].IsZero() || refused[o.ID] {
				continue
			}
			if err := checkOneOff(o, d.cfg.ID); err != nil {
				d.log.Warn("one-off refused", "err", err)
				refused[o.ID] = true
				continue
			}
			stop := make(chan struct{})
			stops[o.ID] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.runOneOff(ctx, o, stop)
				mu.Lock()
				delete(stops, o.ID)
				ended[o.ID] = time.Now()
				mu.Unlock()
			}()
		}
		for id, stop := range stops {
			if !want[id] {
				close(stop)
				delete(stops, id)
				ended[id] = time.Now()
			}
		}
		for id, at := range ended {
			if time.Since(at) > time.Hour {
				delete(ended, id)
			}
		}
		d.removeStrayOneOffs(ctx, want)
	}
	failing := false
	state.Follow(ctx, fetch, news, func(err error) { failing = logTransition(d.log, failing, err, "one-off watch") }, d.cfg.WatchMinDelay)
}

// removeStrayOneOffs removes the one-off containers of this host no request names (their
// requester stopped them while this daemon was away).
func (d *Daemon) removeStrayOneOffs(ctx context.Context, want map[string]bool) {
	list, err := d.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelHost+"="+d.cfg.ID), filters.Arg("label", LabelOneOff))})
	if err != nil {
		return
	}
	for _, c := range list {
		if id := c.Labels[LabelOneOff]; !want[id] {
			d.log.Info("one-off container with no request removed", "oneoff", id, "container", shortID(c.ID))
			d.removeOneOffContainer(ctx, c.ID)
		}
	}
}

func (d *Daemon) removeOneOffContainer(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.StopTimeout+30*time.Second)
	defer cancel()
	secs := int(d.cfg.StopTimeout / time.Second)
	_ = d.docker.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs})
	if err := d.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
		d.log.Warn("one-off container not removed", "container", shortID(id), "err", err)
	}
}

// oneOffRun is one one-off being run.
type oneOffRun struct {
	d    *Daemon
	o    *state.OneOff
	st   state.OneOffStatus
	stop <-chan struct{}
	out  *chunker
}

// runOneOff runs a one-off to its end, records the end, removes the container and, once
// the requester has read it (or right away for a detached one), the one-off's keys.
func (d *Daemon) runOneOff(ctx context.Context, o *state.OneOff, stop <-chan struct{}) {
	r := &oneOffRun{d: d, o: o, stop: stop, st: state.OneOffStatus{ID: o.ID, State: state.OneOffStarting}}
	if prev, err := d.store.OneOffStatus(ctx, d.cfg.ID, o.ID); err == nil && prev != nil {
		r.st = *prev // a restarted daemon carries on
	}
	log := d.log.With("oneoff", o.ID, "formation", o.Formation, "service", o.Service)
	if !r.st.Done() {
		if r.st.State == state.OneOffStarting {
			r.put(ctx)
		}
		code, err := r.execute(ctx)
		if ctx.Err() != nil {
			return // the daemon stops: the container runs on, and the next daemon adopts it
		}
		r.st.Finished = time.Now().UTC()
		if r.out != nil {
			r.st.LastChunk, r.st.Tail = r.out.last(), r.out.tail()
		}
		if err != nil {
			r.st.State, r.st.Error, r.st.ExitCode = state.OneOffFailed, err.Error(), -1
			log.Warn("one-off failed", "err", err)
		} else {
			r.st.State, r.st.ExitCode = state.OneOffExited, code
			log.Info("one-off exited", "exit_code", code, "took", r.st.Finished.Sub(r.st.Started).Round(time.Millisecond))
		}
		r.put(ctx)
	}
	if r.st.Container != "" {
		d.removeOneOffContainer(ctx, r.st.Container)
	}
	if o.Attached {
		select {
		case <-stop: // the requester read the end and deleted the request
		case <-time.After(OneOffGrace):
			log.Info("one-off ended and unread: removed", "grace", OneOffGrace)
		case <-ctx.Done():
			return
		}
	}
	if err := d.store.DeleteOneOff(context.WithoutCancel(ctx), d.cfg.ID, o.ID); err != nil {
		log.Warn("one-off keys not removed", "err", err)
	}
}

func (r *oneOffRun) put(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.d.cfg.ConsulTimeout)
	defer cancel()
	r.st.Updated = time.Now().UTC()
	st := r.st
	if err := r.d.store.PutOneOffStatus(ctx, r.d.cfg.ID, &st); err != nil {
		r.d.log.Warn("one-off status not written", "oneoff", r.o.ID, "err", err)
	}
}

// execute gets the container running (made, or adopted from a previous daemon), streams
// its output, and returns its exit code once it has exited.
func (r *oneOffRun) execute(ctx context.Context) (int, error) {
	d, o := r.d, r.o
	engine, ok := d.docker.(oneOffDocker)
	if !ok {
		return 0, errors.New("this host's engine client cannot attach to containers")
	}
	rel, err := d.release(ctx, o.Formation, o.Release)
	if err != nil {
		return 0, err
	}
	// Its config vars, from this host's sealed copy (the leader seals a release's to the
	// hosts that run it: sync.OneOffHost places a one-off on one of those).
	if rel, err = d.withConfig(ctx, rel); err != nil {
		return 0, fmt.Errorf("config vars: %w", err)
	}
	name := state.ContainerName(d.cfg.ID, o.ID)
	info, err := d.docker.ContainerInspect(ctx, name)
	adopted := err == nil
	switch {
	case adopted && info.Config != nil && info.Config.Labels[LabelOneOff] != o.ID:
		return 0, fmt.Errorf("container %s exists and is not this one-off's", name)
	case err != nil && !errdefs.IsNotFound(err):
		return 0, fmt.Errorf("inspect %s: %w", name, err)
	case !adopted:
		if err := r.pull(ctx, rel.Image); err != nil {
			return 0, err
		}
		img, err := d.docker.ImageInspect(ctx, rel.Image)
		if err != nil {
			return 0, fmt.Errorf("inspect image %s: %w", rel.Image, err)
		}
		priv := privileges{PidsLimit: d.cfg.PidsLimit}
		var entrypoint []string
		if img.Config != nil {
			priv.ImageUser, entrypoint = img.Config.User, img.Config.Entrypoint
		}
		cfg, hc := oneOffSpec(d.cfg.ID, d.cfg.Advertise, o, rel, priv, entrypoint)
		cctx, cancel := settled(ctx)
		created, err := d.docker.ContainerCreate(cctx, cfg, hc, nil, nil, name)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("create container: %w", err)
		}
		r.st.Container = created.ID
	default:
		r.st.Container = info.ID
	}

	// Attached before it starts, so not a byte is missed.
	var streams sync.WaitGroup
	if o.Attached {
		hj, err := engine.ContainerAttach(ctx, r.st.Container, container.AttachOptions{Stream: true, Stdin: o.Stdin, Stdout: true, Stderr: true})
		if err != nil {
			return 0, fmt.Errorf("attach: %w", err)
		}
		defer hj.Close()
		r.out = newChunker(d, o)
		streams.Add(1)
		go func() {
			defer streams.Done()
			if o.TTY {
				io.Copy(r.out.stream(state.OneOffStdout), hj.Reader)
			} else {
				stdcopy.StdCopy(r.out.stream(state.OneOffStdout), r.out.stream(state.OneOffStderr), hj.Reader)
			}
		}()
		go r.out.run(ctx)
		if o.Stdin {
			go r.pumpStdin(ctx, hj)
		}
	}
	if !adopted || info.State == nil || !info.State.Running && info.State.StartedAt == "0001-01-01T00:00:00Z" {
		if err := d.docker.ContainerStart(ctx, r.st.Container, container.StartOptions{}); err != nil {
			return 0, fmt.Errorf("start container: %w", err)
		}
	}
	if r.st.State != state.OneOffRunning {
		r.st.State, r.st.Started = state.OneOffRunning, time.Now().UTC()
		r.put(ctx)
		d.log.Info("one-off started", "oneoff", o.ID, "release", o.Release, "container", shortID(r.st.Container), "command", strings.Join(o.Command, " "))
	}

	code, err := r.wait(ctx, engine)
	if ctx.Err() != nil {
		if r.out != nil {
			r.out.close(ctx) // what it has: the next daemon streams what comes after
		}
		return 0, ctx.Err()
	}
	if r.out != nil {
		done := make(chan struct{})
		go func() { streams.Wait(); close(done) }()
		select { // the stream ends with the process; a detached child may hold it open
		case <-done:
		case <-time.After(5 * time.Second):
		}
		r.out.close(ctx)
	}
	return code, err
}

// pull gets the release's image into the engine, through the daemon's puller.
func (r *oneOffRun) pull(ctx context.Context, image string) error {
	for {
		st := r.d.pulls.ensure(ctx, image, time.Now())
		switch {
		case st.Ready:
			return nil
		case st.Err != nil && !st.Pulling:
			return fmt.Errorf("pull %s: %w", image, st.Err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.stop:
			return errors.New("stopped before it started")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// wait waits for the process to exit, stopping it when the requester deletes the
// request or its timeout passes.
func (r *oneOffRun) wait(ctx context.Context, engine oneOffDocker) (int, error) {
	results, errs := engine.ContainerWait(ctx, r.st.Container, container.WaitConditionNotRunning)
	var timeout <-chan time.Time
	if r.o.Timeout > 0 {
		left := r.o.Timeout
		if !r.st.Started.IsZero() {
			left -= time.Since(r.st.Started)
		}
		timeout = time.After(max(left, 0))
	}
	var why error
	stop := r.stop
	for {
		select {
		case res := <-results:
			if res.Error != nil && res.Error.Message != "" {
				return 0, fmt.Errorf("wait: %s", res.Error.Message)
			}
			return int(res.StatusCode), why
		case err := <-errs:
			return 0, fmt.Errorf("wait: %w", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-stop:
			stop, why = nil, errors.New("stopped by its requester")
			go r.d.stopOneOff(ctx, r.st.Container)
		case <-timeout:
			timeout, why = nil, fmt.Errorf("timed out after %s", r.o.Timeout)
			go r.d.stopOneOff(ctx, r.st.Container)
		}
	}
}

func (d *Daemon) stopOneOff(ctx context.Context, id string) {
	secs := int(d.cfg.StopTimeout / time.Second)
	if err := d.docker.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil && !errdefs.IsNotFound(err) {
		d.log.Warn("one-off not stopped", "container", shortID(id), "err", err)
	}
}

// pumpStdin gives the process the stdin chunks its requester writes, in order, deleting
// each once given; an empty chunk closes stdin.
func (r *oneOffRun) pumpStdin(ctx context.Context, hj types.HijackedResponse) {
	d, o := r.d, r.o
	var index, next uint64
	for ctx.Err() == nil {
		chunks, got, err := d.store.WaitOneOffInput(ctx, d.cfg.ID, o.ID, index, d.cfg.WatchWait)
		if err != nil {
			sleep(ctx, time.Second)
			index = 0
			continue
		}
		index, _ = state.NextIndex(index, got)
		var read []uint64
		for _, c := range chunks {
			if c.N < next {
				continue // given already; its delete is on its way
			}
			data := c.Data
			read = append(read, c.N)
			next = c.N + 1
			if len(data) == 0 {
				hj.CloseWrite()
				d.store.DeleteOneOffChunks(ctx, d.cfg.ID, o.ID, "in", read)
				return
			}
			if _, err := hj.Conn.Write(data); err != nil {
				return // the process is gone
			}
		}
		if len(read) > 0 {
			d.store.DeleteOneOffChunks(ctx, d.cfg.ID, o.ID, "in", read)
		}
	}
}

// oneOffSpec is the container of a one-off: its release's, as an instance's
// (containerSpec), without ports, labelled as a one-off, running the one-off's command.
// A buildpack image runs the command through its launcher, which sets up the buildpacks'
// environment first. imageEntrypoint is the image's own.
func oneOffSpec(host, advertise string, o *state.OneOff, rel *state.Release, priv privileges, imageEntrypoint []string) (*container.Config, *container.HostConfig) {
	inst := state.Instance{ID: o.ID, Formation: o.Formation, Service: o.Service, Release: o.Release}
	cfg, hc := containerSpec(host, advertise, inst, rel, priv)
	cfg.ExposedPorts, hc.PortBindings = nil, nil
	delete(cfg.Labels, LabelInstance)
	cfg.Labels[LabelOneOff] = o.ID
	cfg.Env = append(cfg.Env, "GILLIAM_ONEOFF="+o.ID)
	if len(o.Command) > 0 {
		cfg.Cmd = slices.Clone(o.Command)
		ep := rel.Entrypoint
		if len(ep) == 0 {
			ep = imageEntrypoint
		}
		if len(ep) > 0 && strings.HasPrefix(ep[0], "/cnb/") {
			cfg.Entrypoint = []string{"/cnb/lifecycle/launcher", "--"}
		}
	}
	cfg.Tty = o.TTY
	cfg.AttachStdout, cfg.AttachStderr = o.Attached, o.Attached
	if o.Stdin {
		cfg.OpenStdin, cfg.StdinOnce, cfg.AttachStdin = true, true, true
	}
	if o.TTY && o.Rows > 0 && o.Cols > 0 {
		hc.ConsoleSize = [2]uint{o.Rows, o.Cols}
	}
	return cfg, hc
}

// chunker writes a one-off's output to Consul in chunks: at most every outputFlush, or as
// soon as outputChunk bytes wait, one stream per chunk (its first byte says which).
type chunker struct {
	d   *Daemon
	o   *state.OneOff
	mu  sync.Mutex
	buf []byte // the first byte is the stream of what follows
	seq uint64 // the last chunk's number
	// lines are the last lines written, for the status's tail.
	lines   []string
	partial string
	done    chan struct{}
	closed  bool
}

func newChunker(d *Daemon, o *state.OneOff) *chunker {
	return &chunker{d: d, o: o, done: make(chan struct{})}
}

type chunkStream struct {
	c      *chunker
	stream byte
}

func (c *chunker) stream(s byte) io.Writer { return chunkStream{c, s} }

func (w chunkStream) Write(p []byte) (int, error) {
	c := w.c
	c.mu.Lock()
	if len(c.buf) > 0 && c.buf[0] != w.stream {
		c.flushLocked(context.Background())
	}
	if len(c.buf) == 0 {
		c.buf = append(c.buf, w.stream)
	}
	c.buf = append(c.buf, p...)
	c.keepLines(p)
	full := len(c.buf) >= outputChunk
	if full {
		c.flushLocked(context.Background())
	}
	c.mu.Unlock()
	return len(p), nil
}

// keepLines keeps the last lines of the output.
func (c *chunker) keepLines(p []byte) {
	text := c.partial + string(p)
	parts := strings.Split(text, "\n")
	c.partial = parts[len(parts)-1]
	for _, l := range parts[:len(parts)-1] {
		if l = strings.TrimRight(l, "\r"); len(l) > logLineMax {
			l = l[:logLineMax] + "…"
		}
		c.lines = append(c.lines, l)
	}
	if len(c.lines) > logLines {
		c.lines = c.lines[len(c.lines)-logLines:]
	}
	if len(c.partial) > 4*logLineMax {
		c.partial = c.partial[:4*logLineMax]
	}
}

// flushLocked writes what waits as the next chunk; a write that fails is retried a few
// times, then the output is dropped rather than the process held up.
func (c *chunker) flushLocked(ctx context.Context) {
	if len(c.buf) <= 1 {
		c.buf = c.buf[:0]
		return
	}
	// Numbered by the clock, each above the last: a daemon that adopts the one-off later
	// numbers after this one.
	n := max(uint64(time.Now().UnixNano()), c.seq+1)
	for attempt := 0; attempt < 5; attempt++ {
		// Written even while the daemon stops: what the process wrote is not lost.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.d.cfg.ConsulTimeout)
		err := c.d.store.PutOneOffOutput(wctx, c.d.cfg.ID, c.o.ID, n, c.buf)
		cancel()
		if err == nil {
			break
		}
		if attempt == 4 {
			c.d.log.Warn("one-off output lost", "oneoff", c.o.ID, "bytes", len(c.buf)-1, "err", err)
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	c.seq = n
	c.buf = c.buf[:0]
}

// run flushes every outputFlush until close.
func (c *chunker) run(ctx context.Context) {
	t := time.NewTicker(outputFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.mu.Lock()
			c.flushLocked(ctx)
			c.mu.Unlock()
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (c *chunker) close(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.partial != "" {
		c.lines = append(c.lines, c.partial)
		c.partial = ""
	}
	c.flushLocked(ctx)
	if !c.closed {
		c.closed = true
		close(c.done)
	}
}

func (c *chunker) last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

func (c *chunker) tail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}
