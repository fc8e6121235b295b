package build_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/go-connections/nat"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// formation is the formation the tests build in. Its services' cache volumes keep their
// names from run to run, so only the first run on a machine compiles Go's standard library.
const formation = "buildtest"

// source is a service's files, path to content: a stand-in for a repository's tree at a
// commit.
type source map[string]string

// readSource reads a folder of testdata.
func readSource(t testing.TB, dir string) source {
	t.Helper()
	s := source{}
	root := filepath.Join("testdata", dir)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		s[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// with returns a copy of s with path's content replaced.
func (s source) with(path, content string) source {
	c := source{}
	for k, v := range s {
		c[k] = v
	}
	c[path] = content
	return c
}

// tree is the source's hash, as git's tree hash would be: it changes when any file does.
func (s source) tree() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%d\x00%s", k, len(s[k]), s[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:40]
}

// write is the Request's Source; writes counts its calls.
func (s source) write(calls *int) func(dir string) error {
	return func(dir string) error {
		if calls != nil {
			*calls++
		}
		for path, content := range s {
			p := filepath.Join(dir, filepath.FromSlash(path))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

func (s source) request(service, commit string) build.Request {
	return build.Request{Formation: formation, Service: service, Commit: commit, TreeHash: s.tree(), Source: s.write(nil)}
}

// testScope is the cache scope of the build tests' builders: their caches stay warm from
// one run to the next (a test that needs a cold build uses a service name of its own and
// removes its volumes), whatever registry each test starts.
const testScope = "buildtest"

// newBuilder is a Builder publishing to registry with its data in dataDir (a fresh folder
// when empty), logging into the test's log.
func newBuilder(t testing.TB, registry, dataDir string, opts ...func(*build.Config)) *build.Builder {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := build.Config{Registry: registry, Builder: testenv.Builder(t), DataDir: dataDir, CacheScope: testScope,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
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

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// buildContainers counts the build containers pack starts for a service, from the Docker
// engine's events: containers pack made (label author=pack) whose mounts hold the service's
// cache volume. Other tests' builds on the same engine are not counted.
type buildContainers struct {
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
	done   chan struct{}
}

func countBuildContainers(t testing.TB, d *testenv.Docker, service string) *buildContainers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &buildContainers{cancel: cancel, done: make(chan struct{})}
	// Since makes the engine replay what happened from now on, even before the stream is
	// connected.
	now := time.Now()
	msgs, errs := d.Client.Events(ctx, events.ListOptions{Since: fmt.Sprintf("%d.%09d", now.Unix(), now.Nanosecond()), Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("event", "start"), filters.Arg("label", "author=pack"))})
	want := "." + formation + "." + service + ".build" // a cache volume of this service, whatever the registry
	go func() {
		defer close(c.done)
		for {
			select {
			case m := <-msgs:
				info, err := d.Client.ContainerInspect(context.Background(), m.Actor.ID)
				counted := err != nil // gone already: count it, to err on the side of builds
				for _, mnt := range info.Mounts {
					counted = counted || strings.HasSuffix(mnt.Name, want)
				}
				if counted {
					c.mu.Lock()
					c.n++
					c.mu.Unlock()
				}
			case <-errs:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

// count is the number of build containers started so far; events arrive asynchronously,
// so it waits a moment for stragglers.
func (c *buildContainers) count() int {
	time.Sleep(500 * time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *buildContainers) stop() {
	c.cancel()
	<-c.done
}

// serve runs image in the engine with env and returns the URL of its port 8080.
func serve(t testing.TB, d *testenv.Docker, image string, env ...string) string {
	t.Helper()
	ctx := context.Background()
	d.PullImage(t, image)
	created, err := d.Client.ContainerCreate(ctx,
		&container.Config{Image: image, Env: append([]string{"PORT=8080"}, env...),
			Labels: d.Label, ExposedPorts: nat.PortSet{"8080/tcp": {}}},
		&container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1"}}}},
		nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	// The container, then the image pulled from the test's registry: nothing else uses it.
	t.Cleanup(func() {
		d.Client.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true})
		d.Client.ImageRemove(ctx, image, dockerimage.RemoveOptions{PruneChildren: true})
	})
	if err := d.Client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	inspect, err := d.Client.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	return "http://127.0.0.1:" + inspect.NetworkSettings.Ports["8080/tcp"][0].HostPort + "/"
}

// answers waits until url answers with want.
func answers(t testing.TB, url, want string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, url+" to answer "+want, func() bool {
		return strings.TrimSpace(testenv.HTTPGet(url)) == want
	})
}

// removeVolume removes a cache volume a test made for itself (a cold build's).
func removeVolume(t testing.TB, d *testenv.Docker, name string) {
	t.Helper()
	if !strings.HasPrefix(name, names.CacheVolumePrefix) || !strings.Contains(name, "."+formation+".") {
		t.Fatalf("refusing to remove %s: not a test volume", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// pack removes its containers as it returns; the volume may be busy a moment longer.
	for i := 0; ; i++ {
		err := d.Client.VolumeRemove(ctx, name, true)
		if err == nil || i == 20 {
			if err != nil {
				t.Logf("remove volume %s: %v", name, err)
			}
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// goBinary builds testdata/goapp as a static Linux binary with message, for Dockerfile
// services.
func goBinary(t testing.TB, message string) []byte {
	t.Helper()
	dir := t.TempDir()
	src := readSource(t, "goapp").with("main.go", strings.Replace(readSource(t, "goapp")["main.go"],
		`"hello from goapp"`, fmt.Sprintf("%q", message), 1))
	if err := src.write(nil)(dir); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "app", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build goapp: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "app"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
