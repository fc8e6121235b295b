package build_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A Go service builds with the offline builder, lands in the registry by digest and runs.
// Asked again with no change, nothing is built (no build container starts, the sources are
// not even written) and the same digest comes back; a new Builder on the same data dir and
// registry (a restarted daemon) builds nothing either: the registry is the memory.
func TestGoServiceBuildsRunsAndIsNotBuiltTwice(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	data := t.TempDir()
	var logged syncBuffer
	b := newBuilder(t, reg.Addr, data, func(c *build.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	ctx := context.Background()

	src := readSource(t, "goapp")
	req := src.request("go", "c0ffee1")
	res, err := b.Build(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", res.Image, res.Duration.Round(time.Millisecond))
	if !res.Built || !strings.HasPrefix(res.Image, reg.Addr+"/"+formation+"/go@sha256:") || res.TreeHash != src.tree() {
		t.Fatalf("result %+v: want a build pinned by digest in the test registry, of tree %s", res, src.tree())
	}
	answers(t, serve(t, d, res.Image), "hello from goapp")

	// The build log is kept, and was streamed to the daemon's log with the service's name.
	text, err := os.ReadFile(res.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "\nGo: ") || !strings.Contains(string(text), "gilliam-sync: built "+res.Image) {
		t.Errorf("build log %s lacks the Go buildpack's output or the result:\n%s", res.Log, text)
	}
	// Built into the engine, pushed by gilliam-sync: the push's cost, from the log.
	if m := regexp.MustCompile(`gilliam-sync: pushed (sha256:\S+) in (\S+)`).FindStringSubmatch(string(text)); m == nil || !strings.HasSuffix(res.Image, m[1]) {
		t.Errorf("build log %s does not say the image was pushed as %s", res.Log, res.Image)
	} else {
		testenv.Report(t, "build-push", fmt.Sprintf("Go service image pushed from the engine to the registry in %s (build %s)", m[2], res.Duration.Round(time.Millisecond)))
	}
	if !strings.Contains(logged.String(), `msg=build formation=buildtest service=go commit=c0ffee1 line="Go: `) {
		t.Errorf("the build's output was not streamed to the logger with the service's name:\n%s", logged.String())
	}

	// No change: nothing is built, in this Builder or in a new one on the same data dir.
	for _, restarted := range []bool{false, true} {
		if restarted {
			b = newBuilder(t, reg.Addr, data)
		}
		containers := countBuildContainers(t, d, "go")
		var writes int
		again := req
		again.Commit, again.Source = "c0ffee2", src.write(&writes)
		res2, err := b.Build(ctx, again)
		if err != nil {
			t.Fatal(err)
		}
		if n := containers.count(); n != 0 || res2.Built || writes != 0 {
			t.Fatalf("restarted=%v: an unchanged service was built again: %d build containers, Built=%v, sources written %d times", restarted, n, res2.Built, writes)
		}
		if res2.Image != res.Image {
			t.Fatalf("restarted=%v: image %s, want the first build's %s", restarted, res2.Image, res.Image)
		}
		t.Logf("restarted=%v: no change found in %s", restarted, res2.Duration)
	}
}

// A Procfile service (no Go) builds and runs its web process. With the registry away, a
// request fails with an error to retry, not a failed build.
func TestProcfileServiceBuildsAndRuns(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	src := readSource(t, "procfile")
	res, err := b.Build(context.Background(), src.request("procfile", "abc"))
	if err != nil {
		t.Fatal(err)
	}
	answers(t, serve(t, d, res.Image), "hello from procfile")

	reg.Down()
	_, err = b.Build(context.Background(), src.with("Procfile", "web: httpd -f -p $PORT\n").request("procfile", "def"))
	var failed *build.FailedError
	if err == nil || errors.As(err, &failed) {
		t.Fatalf("registry away: %v, want an error to retry", err)
	}
	t.Logf("registry away: %v", err)
}

// An image service is resolved to the digest its tag points at when asked, so a release
// made from it never changes when the tag moves.
func TestImageServiceResolvesToDigest(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	first := testenv.PushImage(t, d.TestImage(t), reg.Addr+"/team/app")

	req := build.Request{Formation: formation, Service: "db", Kind: build.KindImage, Image: reg.Addr + "/team/app:latest"}
	res, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Image != first || res.Built {
		t.Fatalf("resolved %+v, want %s, not built", res, first)
	}

	// The tag moves: a new request sees the new digest; the first stays what it was.
	moved := testenv.PushImage(t, d.TestImage(t), reg.Addr+"/team/other")
	pushTag(t, moved, reg.Addr+"/team/app:latest")
	res, err = b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.Addr + "/team/app@" + digestOf(moved); res.Image != want {
		t.Fatalf("after the tag moved: %s, want %s", res.Image, want)
	}
}

// A dockerfile service builds FROM scratch with the engine (nothing pulled), is pushed by
// digest and runs; unchanged, it is not built again.
func TestDockerfileServiceBuildsAndRuns(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	bin := goBinary(t, "hello from a Dockerfile")
	dockerfile := "FROM scratch\nARG GREETING\nCOPY app /app\nENV PORT=8080 GREETING=${GREETING}\nENTRYPOINT [\"/app\"]\n"
	writes := 0
	req := build.Request{Formation: formation, Service: "dockerfile", Kind: build.KindDockerfile,
		Commit: "d0c", TreeHash: source{"Dockerfile": dockerfile, "app": string(bin)}.tree(),
		Env: map[string]string{"GREETING": "hi"},
		Source: func(dir string) error {
			writes++
			if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "app"), bin, 0o755)
		}}
	res, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Client.ImageRemove(context.Background(), build.LocalImage(formation, "dockerfile"), image.RemoveOptions{PruneChildren: true})
	})
	if !res.Built || !strings.HasPrefix(res.Image, reg.Addr+"/"+formation+"/dockerfile@sha256:") {
		t.Fatalf("result %+v: want a build pinned by digest in the test registry", res)
	}
	answers(t, serve(t, d, res.Image), "hello from a Dockerfile")

	again, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if again.Built || again.Image != res.Image || writes != 1 {
		t.Fatalf("unchanged Dockerfile service built again: %+v (sources written %d times)", again, writes)
	}

	// The code's faults are failed builds (stalled), not errors to retry.
	for _, tc := range []struct{ dockerfile, reason string }{
		{"", "no Dockerfile"},
		{"FROM scratch\nCOPY missing /missing\n", "Dockerfile: COPY failed"},
		{"FROM gilliam-test/not-in-the-engine:1\n", "Dockerfile line 1: FROM gilliam-test/not-in-the-engine:1: "},
	} {
		src := source{"app": "x"}
		if tc.dockerfile != "" {
			src["Dockerfile"] = tc.dockerfile
		}
		req := src.request("dockerfile", "bad")
		req.Kind = build.KindDockerfile
		_, err := b.Build(context.Background(), req)
		var failed *build.FailedError
		if !errors.As(err, &failed) || !strings.HasPrefix(failed.Reason, tc.reason) {
			t.Errorf("%q: %v, want a failed build: %s...", tc.dockerfile, err, tc.reason)
		}
	}
}

// Five commits in quick succession while the first builds: the three in between are
// superseded, so two builds run, the second for the newest commit, which is what serves.
// The first build holds on while writing its sources until the four others have arrived,
// each after the one before it (on a loaded machine, goroutines alone would not keep them
// in order).
func TestQuickCommitsBuildFirstAndNewest(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	containers := countBuildContainers(t, d, "queue")
	base := readSource(t, "procfile")
	commit := func(i int) build.Request {
		return base.with("public/index.html", fmt.Sprintf("commit %d\n", i)).request("queue", fmt.Sprintf("commit%d", i))
	}

	type outcome struct {
		res build.Result
		err error
	}
	results := make([]chan outcome, 6)
	submit := func(req build.Request) chan outcome {
		out := make(chan outcome, 1)
		go func() {
			res, err := b.Build(context.Background(), req)
			out <- outcome{res, err}
		}()
		return out
	}
	first := commit(1)
	writing, release := make(chan struct{}), make(chan struct{})
	write := first.Source
	first.Source = func(dir string) error {
		close(writing)
		<-release
		return write(dir)
	}
	results[1] = submit(first)
	<-writing
	results[2] = submit(commit(2))
	time.Sleep(300 * time.Millisecond) // commit 2 reaches the queue before commit 3
	superseded := map[int]outcome{}
	for i := 3; i <= 5; i++ {
		results[i] = submit(commit(i))
		select { // replaced by commit i: it is in the queue
		case superseded[i-1] = <-results[i-1]:
		case <-time.After(30 * time.Second):
			close(release)
			t.Fatalf("commit %d was not replaced by commit %d", i-1, i)
		}
	}
	close(release)

	for i := 2; i <= 4; i++ {
		if !errors.Is(superseded[i].err, build.ErrSuperseded) {
			t.Errorf("commit %d: %+v, want ErrSuperseded", i, superseded[i])
		}
	}
	if r := <-results[1]; r.err != nil || !r.res.Built {
		t.Fatalf("commit 1: %+v", r)
	}
	last := <-results[5]
	if last.err != nil || !last.res.Built || last.res.TreeHash != commit(5).TreeHash {
		t.Fatalf("commit 5: %+v, want it built", last)
	}
	if n := containers.count(); n != 2 {
		t.Fatalf("%d builds ran, want 2", n)
	}
	answers(t, serve(t, d, last.res.Image), "commit 5")
}

// A Go syntax error fails the build: the error is a *FailedError (the commit is stalled,
// not retried) that carries the compiler's error line, nothing is published for it, and the
// service's previous image is still there. (The good build first also keeps the service's
// cache warm: a failed build saves no cache.)
func TestFailingBuildReportsTheErrorLine(t *testing.T) {
	reg := testenv.NewRegistry(t)
	b := newBuilder(t, reg.Addr, "")
	ctx := context.Background()
	good := readSource(t, "goapp")
	prev, err := b.Build(ctx, good.request("fails", "good"))
	if err != nil {
		t.Fatal(err)
	}

	broken := good.with("main.go", strings.Replace(good["main.go"], "fmt.Fprintln(w, message)", "fmt.Fprintln(w, message", 1))
	before, _, _ := strings.Cut(good["main.go"], "fmt.Fprintln(w, message)")
	line := regexp.MustCompile(fmt.Sprintf(`main\.go:%d:\d+: syntax error`, strings.Count(before, "\n")+1))
	_, err = b.Build(ctx, broken.request("fails", "bad"))
	var failed *build.FailedError
	if !errors.As(err, &failed) {
		t.Fatalf("error %v (%T), want a *build.FailedError", err, err)
	}
	t.Logf("error:\n%v", err)
	if !line.MatchString(err.Error()) || !line.MatchString(failed.Tail) {
		t.Fatalf("the error does not carry the compiler's line (%s):\n%v", line, err)
	}
	if text, rerr := os.ReadFile(failed.Log); rerr != nil || !line.Match(text) {
		t.Fatalf("build log %s: %v\n%s", failed.Log, rerr, text)
	}

	repo, _ := name.NewRepository(build.Repository(reg.Addr, formation, "fails"), name.Insecure)
	if tags, err := remote.List(repo); err != nil || len(tags) != 1 {
		t.Fatalf("tags %v (%v): want the good build's only", tags, err)
	}
	again, err := b.Build(ctx, good.request("fails", "good-again"))
	if err != nil || again.Built || again.Image != prev.Image {
		t.Fatalf("the good source after the failure: %+v, %v; want %s, not built", again, err, prev.Image)
	}
}

// A build that outlives its timeout is stopped and reported as failed with its log's end; a
// build whose caller goes away is cancelled. Either way pack's containers are gone. Each
// uses a fresh cache volume, so the Go build is cold (about 20 s) and still running when it
// is stopped.
func TestTimeoutAndCancel(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	src := readSource(t, "goapp")
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		cancel  time.Duration
	}{
		{name: "timeout", timeout: 4 * time.Second},
		{name: "cancel", cancel: 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			service := "cold-" + tc.name + "-" + time.Now().Format("150405.000000000")[7:]
			service = strings.ReplaceAll(service, ".", "")
			t.Cleanup(func() {
				removeVolume(t, d, build.CacheVolume(testScope, formation, service))
				removeVolume(t, d, build.LaunchCacheVolume(testScope, formation, service))
			})
			b := newBuilder(t, reg.Addr, "", func(c *build.Config) { c.Timeout = tc.timeout })
			ctx := context.Background()
			if tc.cancel > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.cancel)
				defer cancel()
			}
			start := time.Now()
			_, err := b.Build(ctx, src.request(service, "slow"))
			took := time.Since(start)
			t.Logf("returned after %s: %v", took.Round(time.Millisecond), err)
			if took > 15*time.Second {
				t.Errorf("took %s to stop", took)
			}
			var failed *build.FailedError
			switch tc.name {
			case "timeout":
				if !errors.As(err, &failed) || !strings.Contains(failed.Reason, "timed out after 4s") || failed.Tail == "" {
					t.Fatalf("error %v, want a *FailedError timed out after 4s with the log's end", err)
				}
			case "cancel":
				if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &failed) {
					t.Fatalf("error %v, want the caller's context error, not a failure", err)
				}
			}
			testenv.Eventually(t, 30*time.Second, "pack's build containers to be gone", func() bool {
				return !volumeInUse(t, d, build.CacheVolume(testScope, formation, service))
			})
		})
	}
}

// pushTag copies the image pinned (repo@sha256:...) to the tag ref.
func pushTag(t testing.TB, pinned, ref string) {
	t.Helper()
	src, err := name.ParseReference(pinned, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatal(err)
	}
}

func digestOf(pinned string) string {
	_, d, _ := strings.Cut(pinned, "@")
	return d
}

// volumeInUse says whether a container (running or not) mounts the volume.
func volumeInUse(t testing.TB, d *testenv.Docker, volume string) bool {
	t.Helper()
	list, err := d.Client.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("volume", volume))})
	if err != nil {
		t.Fatal(err)
	}
	return len(list) > 0
}

// syncBuffer is a bytes.Buffer safe for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Registry credentials come from the Docker credential chain (DOCKER_CONFIG's
// config.json, credential helpers): an image service on a registry that wants a password
// resolves with the one configured there, and fails without.
func TestImageServiceUsesDockerCredentials(t *testing.T) {
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "deploy" || pass != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(256, 1)
	tag, _ := name.NewTag(addr+"/team/db:15", name.Insecure)
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: "deploy", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()

	// The registry is on the host's loopback, over plain HTTP: the operator lists it.
	b := newBuilderNoEngine(t, func(c *build.Config) { c.Registries.Insecure = []string{addr} })
	req := build.Request{Formation: formation, Service: "db", Kind: build.KindImage, Image: addr + "/team/db:15"}

	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, err := b.Build(context.Background(), req); err == nil {
		t.Fatal("resolved without credentials")
	}
	config := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, addr, base64.StdEncoding.EncodeToString([]byte("deploy:s3cret")))
	if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := b.Build(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want := addr + "/team/db@" + digest.String(); res.Image != want {
		t.Fatalf("resolved %s, want %s", res.Image, want)
	}
}
