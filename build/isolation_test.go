package build_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// hostPort is a port on the host's loopback that counts who connects to it: what a build
// must not reach (Consul's HTTP port, the registry's admin paths).
type hostPort struct {
	addr  string
	conns atomic.Int64
}

func newHostPort(t testing.TB) *hostPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostPort{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return p
}

// started inspects the containers the engine starts while a test runs, for those match
// picks: the settings of a build container are checked while it runs.
type started struct {
	mu     sync.Mutex
	seen   []container.InspectResponse
	cancel context.CancelFunc
	done   chan struct{}
}

func watchStarts(t testing.TB, d *testenv.Docker, match func(container.InspectResponse) bool) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{cancel: cancel, done: make(chan struct{})}
	now := time.Now()
	msgs, errs := d.Client.Events(ctx, events.ListOptions{Since: fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()),
		Filters: filters.NewArgs(filters.Arg("type", "container"), filters.Arg("event", "start"))})
	go func() {
		defer close(s.done)
		for {
			select {
			case m := <-msgs:
				info, err := d.Client.ContainerInspect(context.Background(), m.Actor.ID)
				if err == nil && match(info) {
					s.mu.Lock()
					s.seen = append(s.seen, info)
					s.mu.Unlock()
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

func (s *started) stop() {
	s.cancel()
	<-s.done
}

func (s *started) containers() []container.InspectResponse {
	time.Sleep(500 * time.Millisecond) // events arrive asynchronously
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]container.InspectResponse(nil), s.seen...)
}

// checkIsolated fails the test unless a build container has the builder's isolation.
func checkIsolated(t testing.TB, what string, c container.InspectResponse, pids bool) {
	t.Helper()
	hc := c.HostConfig
	t.Logf("%s %s: network %s, memory %d, memory+swap %d, nano cpus %d, cpu quota %d/%d, shares %d, pids %v, security %v",
		what, c.ID[:12], hc.NetworkMode, hc.Memory, hc.MemorySwap, hc.NanoCPUs, hc.CPUQuota, hc.CPUPeriod, hc.CPUShares, pidsOf(hc), hc.SecurityOpt)
	if hc.NetworkMode != "none" {
		t.Errorf("%s: network %q, want none", what, hc.NetworkMode)
	}
	if hc.Memory != 512<<20 || hc.MemorySwap != 512<<20 {
		t.Errorf("%s: memory %d, memory+swap %d; want both 512 MiB", what, hc.Memory, hc.MemorySwap)
	}
	if hc.NanoCPUs != 1.5e9 && !(hc.CPUQuota == 150_000 && hc.CPUPeriod == 100_000) {
		t.Errorf("%s: nano cpus %d, quota %d/%d; want 1.5 CPUs", what, hc.NanoCPUs, hc.CPUQuota, hc.CPUPeriod)
	}
	if hc.CPUShares != build.BuildCPUShares {
		t.Errorf("%s: cpu shares %d, want %d (instances before builds)", what, hc.CPUShares, build.BuildCPUShares)
	}
	if pids && pidsOf(hc) != int64(300) {
		t.Errorf("%s: pids limit %v, want 300", what, pidsOf(hc))
	}
}

func pidsOf(hc *container.HostConfig) any {
	if hc.PidsLimit == nil {
		return nil
	}
	return *hc.PidsLimit
}

// limits are the caps the isolation tests give, so that their values show they came from
// the configuration and not from a default.
func limits(c *build.Config) {
	c.Isolation = build.Isolation{Memory: 512 << 20, CPUs: 1.5, Pids: 300}
}

// A buildpack build runs with no network and capped memory, CPU and pids: a build whose Go
// toolchain is pointed at a port on the host's loopback (its module download, GOPROXY, to
// where Consul would listen) cannot reach it, fails as a build that failed, with the
// refused connection in its log, and the port sees no connection. The build container is
// inspected while it runs.
func TestBuildpackBuildHasNoNetworkAndIsCapped(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	consul := newHostPort(t)
	b := newBuilder(t, reg.Addr, "", limits)
	cache := build.CacheVolume(testScope, formation, "isolated")
	starts := watchStarts(t, d, func(c container.InspectResponse) bool {
		for _, m := range c.Mounts {
			if m.Name == cache {
				return true
			}
		}
		return false
	})

	src := readSource(t, "goapp").
		with("go.mod", "module example.com/goapp\n\ngo 1.26\n\nrequire example.com/dep v1.0.0\n").
		with("go.sum", "example.com/dep v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nexample.com/dep v1.0.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").
		with("dep.go", "package main\n\nimport _ \"example.com/dep\"\n")
	req := src.request("isolated", "reach-consul")
	req.Env = map[string]string{"GOPROXY": "http://" + consul.addr}
	_, err := b.Build(context.Background(), req)
	var failed *build.FailedError
	if !errors.As(err, &failed) {
		t.Fatalf("error %v, want a failed build", err)
	}
	t.Logf("build failed as it should:\n%v", err)
	if !strings.Contains(failed.Tail, consul.addr) || !strings.Contains(failed.Tail, "connection refused") {
		t.Errorf("the build log does not show the refused connection to %s:\n%s", consul.addr, failed.Tail)
	}
	if n := consul.conns.Load(); n != 0 {
		t.Fatalf("the host's port saw %d connections from the build", n)
	}
	seen := starts.containers()
	if len(seen) == 0 {
		t.Fatal("no build container seen")
	}
	for _, c := range seen {
		checkIsolated(t, "build container", c, true)
		if !hasOpt(c.HostConfig.SecurityOpt, "no-new-privileges") {
			t.Errorf("build container: security options %v lack no-new-privileges", c.HostConfig.SecurityOpt)
		}
	}
}

func hasOpt(opts []string, want string) bool {
	for _, o := range opts {
		if o == want || o == want+":true" {
			return true
		}
	}
	return false
}

// runImage is the offline builder's run image (busybox), in the engine: a base image with
// a shell and nc for Dockerfile tests.
func runImage(t testing.TB) string {
	t.Helper()
	if ref := os.Getenv("GILLIAM_RUN_IMAGE"); ref != "" {
		return ref
	}
	return "127.0.0.1:5000/gilliam/stack-run:busybox"
}

// dockerfileRequest is a dockerfile service whose source is files.
func dockerfileRequest(service string, files source) build.Request {
	req := files.request(service, "df")
	req.Kind = build.KindDockerfile
	return req
}

// A Dockerfile cannot make the engine fetch from the host's network: an ADD of a URL on
// the host's loopback is refused before anything is built, naming the line, and the server
// behind the URL sees no request. A RUN step that connects to a port on the host's loopback
// fails (the step has no network), and its container, inspected while it runs, has the
// memory and CPU caps, and sits in a cgroup of the build's that caps its processes.
func TestDockerfileBuildCannotReachTheHost(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "", limits)
	t.Cleanup(func() {
		d.Client.ImageRemove(context.Background(), build.LocalImage(formation, "df-run"), image.RemoveOptions{PruneChildren: true})
	})

	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintln(w, "secret config var")
	}))
	defer srv.Close()
	add := "FROM scratch\nCOPY app /app\nADD " + srv.URL + "/v1/kv/gilliam/formations/other/config?raw /config\n"
	_, err := b.Build(context.Background(), dockerfileRequest("df-add", source{"Dockerfile": add, "app": "x"}))
	var failed *build.FailedError
	if !errors.As(err, &failed) || !strings.Contains(failed.Reason, "Dockerfile line 3: ADD "+srv.URL) || !strings.Contains(failed.Reason, "ADD of a URL is refused") {
		t.Fatalf("error %v, want a failed build naming line 3 and the ADD of a URL", err)
	}
	t.Logf("ADD of a URL: %v", err)
	if n := requests.Load(); n != 0 {
		t.Fatalf("the server behind the URL saw %d requests", n)
	}

	consul := newHostPort(t)
	marker := fmt.Sprintf("isolated-run-%d", time.Now().UnixNano())
	// The classic builder takes no pids limit: the RUN containers are created in a cgroup
	// made for the build, whose pids.max is read while the step runs.
	var pidsMax sync.Map
	starts := watchStarts(t, d, func(c container.InspectResponse) bool {
		if !strings.Contains(strings.Join(c.Config.Cmd, " "), marker) {
			return false
		}
		if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", c.HostConfig.CgroupParent, "pids.max")); err == nil {
			pidsMax.Store(c.ID, strings.TrimSpace(string(b)))
		}
		return true
	})
	host, port, _ := net.SplitHostPort(consul.addr)
	run := fmt.Sprintf("FROM %s\nRUN echo %s && sleep 2 && nc -w 5 %s %s </dev/null\n", runImage(t), marker, host, port)
	_, err = b.Build(context.Background(), dockerfileRequest("df-run", source{"Dockerfile": run}))
	if !errors.As(err, &failed) || !strings.Contains(failed.Tail, "Connection refused") {
		t.Fatalf("error %v, want a failed build whose log shows the refused connection", err)
	}
	t.Logf("RUN connecting to the host: %v", err)
	if n := consul.conns.Load(); n != 0 {
		t.Fatalf("the host's port saw %d connections from the RUN step", n)
	}
	seen := starts.containers()
	if len(seen) == 0 {
		t.Fatal("the RUN step's container was not seen")
	}
	for _, c := range seen {
		checkIsolated(t, "RUN container", c, false)
		max, _ := pidsMax.Load(c.ID)
		t.Logf("RUN container %s: cgroup parent %s, pids.max %v", c.ID[:12], c.HostConfig.CgroupParent, max)
		if c.HostConfig.CgroupParent == "" || max != "300" {
			t.Errorf("RUN container: cgroup parent %q with pids.max %v, want a cgroup of the build's with pids.max 300", c.HostConfig.CgroupParent, max)
		}
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/gilliam-build-" + formation + ".df-run-*"); len(left) > 0 {
		t.Errorf("the build's cgroups are left behind: %v", left)
	}
}

// Image services come only from registries the operator allows: a registry on the host's
// loopback or at the metadata address is refused (a failed build, naming the image), unless
// listed; plain HTTP only to registries listed as insecure. The registry builds publish to
// is allowed.
func TestImageServiceRegistries(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	other := testenv.NewRegistry(t)
	pinned := testenv.PushImage(t, d.TestImage(t), other.Addr+"/team/app")
	own := testenv.PushImage(t, d.TestImage(t), reg.Addr+"/team/app")
	image := func(ref string) build.Request {
		return build.Request{Formation: formation, Service: "img", Kind: build.KindImage, Image: ref}
	}

	b := newBuilder(t, reg.Addr, "")
	for _, ref := range []string{other.Addr + "/team/app:latest", "169.254.169.254/latest/meta-data:x", "localhost:8500/v1/kv:x"} {
		_, err := b.Build(context.Background(), image(ref))
		var failed *build.FailedError
		if !errors.As(err, &failed) || !strings.Contains(err.Error(), "image "+ref) || !strings.Contains(err.Error(), "is not allowed") {
			t.Errorf("%s: %v, want a failed build naming the image as not allowed", ref, err)
		}
		t.Logf("%s: %v", ref, err)
	}
	if res, err := b.Build(context.Background(), image(reg.Addr+"/team/app:latest")); err != nil || res.Image != own {
		t.Errorf("the builder's own registry: %+v, %v; want %s", res, err, own)
	}

	// Listed as allowed but not insecure: HTTPS only, which the test registry does not speak.
	b = newBuilder(t, reg.Addr, "", func(c *build.Config) { c.Registries.Allowed = []string{other.Addr} })
	if _, err := b.Build(context.Background(), image(other.Addr+"/team/app:latest")); err == nil {
		t.Error("a registry listed as allowed was reached over plain HTTP")
	} else {
		t.Logf("allowed, not insecure: %v", err)
	}

	b = newBuilder(t, reg.Addr, "", func(c *build.Config) { c.Registries.Insecure = []string{other.Addr} })
	res, err := b.Build(context.Background(), image(other.Addr+"/team/app:latest"))
	if err != nil || res.Image != pinned {
		t.Fatalf("a registry listed as insecure: %+v, %v; want %s", res, err, pinned)
	}
}

// The registry policy holds for every connection, not only the name written: a redirect
// (or a token realm) from an allowed registry to the host's loopback is refused when
// dialling, and the server there sees nothing.
func TestImageServiceRedirectToLoopbackRefused(t *testing.T) {
	var hits atomic.Int64
	// Over HTTPS, so that it is the address that is refused, not the scheme.
	inner := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer inner.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer front.Close()
	frontAddr := strings.TrimPrefix(front.URL, "http://")
	b := newBuilderNoEngine(t, func(c *build.Config) { c.Registries.Insecure = []string{frontAddr} })
	_, err := b.Build(context.Background(), build.Request{Formation: formation, Service: "img", Kind: build.KindImage,
		Image: frontAddr + "/team/app:1"})
	if err == nil || !strings.Contains(err.Error(), "is not allowed: a loopback address") {
		t.Fatalf("error %v, want the redirect to the loopback refused", err)
	}
	t.Logf("redirect: %v", err)
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server behind the redirect saw %d requests", n)
	}
}

// newBuilderNoEngine is a Builder for image services only: no build runs, so no builder
// image is needed.
func newBuilderNoEngine(t testing.TB, opts ...func(*build.Config)) *build.Builder {
	t.Helper()
	cfg := build.Config{Registry: "127.0.0.1:5000", DataDir: filepath.Join(t.TempDir(), "build")}
	for _, o := range opts {
		o(&cfg)
	}
	b, err := build.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// BP_GO_TARGETS is data: a value that would be a flag of go build (-toolexec runs a program
// of the repository's for every compile) is refused by the Go buildpack before go build
// runs, as a failed build that says why; the program never runs.
func TestGoTargetsAreNeverFlags(t *testing.T) {
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	src := readSource(t, "goapp").with("evil.sh", "#!/bin/sh\necho TOOLEXEC RAN >&2\nexec \"$@\"\n")
	for _, targets := range []string{"-toolexec=./evil.sh", ". -toolexec=./evil.sh", "./$(./evil.sh)"} {
		req := src.request("go", "flags")
		req.Env = map[string]string{"BP_GO_TARGETS": targets}
		_, err := b.Build(context.Background(), req)
		var failed *build.FailedError
		if !errors.As(err, &failed) || !strings.Contains(failed.Tail, "is not a package path") || strings.Contains(failed.Tail, "TOOLEXEC RAN") {
			t.Fatalf("BP_GO_TARGETS=%s: %v; want a failed build refusing the value, the program never run", targets, err)
		}
		if strings.Contains(failed.Tail, "Go: compiling") {
			t.Errorf("BP_GO_TARGETS=%s: go build ran:\n%s", targets, failed.Tail)
		}
	}
	// Package paths build (in the Go service's warm cache).
	req := src.request("go", "paths")
	req.Env = map[string]string{"BP_GO_TARGETS": " . "}
	if _, err := b.Build(context.Background(), req); err != nil {
		t.Fatalf("BP_GO_TARGETS=' . ': %v", err)
	}
}

// Built into the engine and pushed by gilliam-sync, an image keeps the digest semantics
// the registry-as-memory relies on: the same source, builder and build env give the same
// digest, built again from nothing into another registry.
func TestRebuildGivesTheSameDigest(t *testing.T) {
	src := readSource(t, "procfile")
	var images []string
	for range 2 {
		reg := testenv.NewRegistry(t)
		res, err := newBuilder(t, reg.Addr, "").Build(context.Background(), src.request("procfile", "same"))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Built {
			t.Fatalf("%+v: want a build (a new registry)", res)
		}
		images = append(images, res.Image)
	}
	_, first, _ := strings.Cut(images[0], "@")
	_, second, _ := strings.Cut(images[1], "@")
	if first != second {
		t.Fatalf("the same source built twice: %s and %s", images[0], images[1])
	}
}
