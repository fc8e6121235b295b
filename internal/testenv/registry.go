package testenv

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a real OCI registry (go-containerregistry's pkg/registry, in memory) served
// over plain HTTP on 127.0.0.1, where the Docker engine and the buildpack lifecycle can
// reach it without configuration. Down and Up take it away and bring it back on the same
// address with the same content, for tests of a registry outage.
type Registry struct {
	// Addr is host:port, the registry part of image references: Addr + "/repo:tag".
	Addr string

	t       testing.TB
	handler http.Handler
	server  *http.Server
	done    chan struct{}

	mu     sync.Mutex
	pushes map[string]int // manifest PUTs answered 201, by repository
}

// NewRegistry starts a registry; t.Cleanup stops it.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	r := &Registry{t: t, pushes: map[string]int{}}
	r.handler = r.counting(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: registry: %v", err)
	}
	r.Addr = l.Addr().String()
	r.serve(l)
	t.Cleanup(r.Down)
	t.Cleanup(r.removePulled)
	return r
}

// removePulled removes from the Docker engine the images pulled from this registry: the
// registry's address is unique to the test, so they are the test's own.
func (r *Registry) removePulled() {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	images, err := cli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		return
	}
	prefix := r.Addr + "/"
	for _, img := range images {
		for _, ref := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(ref, prefix) {
				// By reference: an image also tagged elsewhere only loses this name.
				cli.ImageRemove(ctx, ref, image.RemoveOptions{})
			}
		}
	}
}

// Pushes is how many manifests were pushed to repo (a path such as "hello/web") and
// accepted: one per image published there under a tag, which is how a test counts the
// builds that reached the registry whatever the daemons logged.
func (r *Registry) Pushes(repo string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pushes[repo]
}

// counting wraps the registry's handler to count accepted manifest PUTs by repository.
func (r *Registry) counting(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		repo, ok := manifestRepo(req)
		if !ok {
			h.ServeHTTP(w, req)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, req)
		if sw.status == http.StatusCreated {
			r.mu.Lock()
			r.pushes[repo]++
			r.mu.Unlock()
		}
	})
}

// manifestRepo is the repository of a manifest PUT: PUT /v2/<repo>/manifests/<reference>.
func manifestRepo(req *http.Request) (string, bool) {
	if req.Method != http.MethodPut {
		return "", false
	}
	path, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(path, "/manifests/")
	if i <= 0 {
		return "", false
	}
	return path[:i], true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (r *Registry) serve(l net.Listener) {
	r.server = &http.Server{Handler: r.handler, ReadHeaderTimeout: 10 * time.Second}
	r.done = make(chan struct{})
	go func(s *http.Server, done chan struct{}) {
		defer close(done)
		if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.t.Logf("testenv: registry: %v", err)
		}
	}(r.server, r.done)
}

// Down closes the listener and every open connection; requests fail until Up.
func (r *Registry) Down() {
	if r.server == nil {
		return
	}
	r.server.Close()
	<-r.done
	r.server = nil
}

// Up serves again on the same address, with everything pushed before Down.
func (r *Registry) Up() {
	r.t.Helper()
	if r.server != nil {
		return
	}
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port can take a moment to be free again
		if l, err = net.Listen("tcp", r.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("testenv: registry up again on %s: %v", r.Addr, err)
	}
	r.serve(l)
}

// PushRandomImage pushes a small random image to addr/repo under each tag and returns it
// pinned by digest (addr/repo@sha256:...): an image to resolve, release or collect, never
// to run.
func PushRandomImage(t testing.TB, addr, repo string, tags ...string) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		ref, err := name.NewTag(addr+"/"+repo+":"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatalf("testenv: push %s: %v", ref, err)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return addr + "/" + repo + "@" + digest.String()
}
