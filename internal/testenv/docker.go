package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/dockerbuild"
)

// TestLabel marks what a test created in Docker; its value is unique per test.
const TestLabel = "io.gilliam.test"

// Docker is the local Docker engine for one test.
type Docker struct {
	Client *client.Client
	// Label is {TestLabel: unique value}: put it on what the test creates and t.Cleanup
	// removes it.
	Label map[string]string
}

// NewDocker connects to the engine (API version negotiated) and fails the test when it does
// not answer. At cleanup it removes the containers carrying the test's label.
func NewDocker(t testing.TB) *Docker {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("testenv: docker client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatalf("testenv: the Docker engine does not answer: %v", err)
	}
	// Negotiated now, once: the client would otherwise do it on its first call, unlocked,
	// and tests call it from several goroutines.
	cli.NegotiateAPIVersion(ctx)
	d := &Docker{
		Client: cli,
		Label:  map[string]string{TestLabel: fmt.Sprintf("%s-%d", sanitize(t.Name()), time.Now().UnixNano())},
	}
	t.Cleanup(func() {
		d.RemoveContainers(t, TestLabel, d.Label[TestLabel])
		cli.Close()
	})
	return d
}

// RemoveContainers force-removes every container with label key=value (for example the
// containers a host daemon under test made, by its host label), then the networks with
// that label (a host daemon's formation networks).
func (d *Docker) RemoveContainers(t testing.TB, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := d.Client.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", key+"="+value)),
	})
	if err != nil {
		t.Logf("testenv: list containers %s=%s: %v", key, value, err)
		return
	}
	for _, c := range list {
		err := d.Client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !errdefs.IsNotFound(err) {
			t.Logf("testenv: remove container %s: %v", c.ID[:12], err)
		}
	}
	nets, err := d.Client.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", key+"="+value))})
	if err != nil {
		t.Logf("testenv: list networks %s=%s: %v", key, value, err)
		return
	}
	for _, n := range nets {
		if err := d.Client.NetworkRemove(ctx, n.ID); err != nil && !errdefs.IsNotFound(err) {
			t.Logf("testenv: remove network %s: %v", n.Name, err)
		}
	}
}

// The test image is built once per test process and named by the hash of its binary, so
// an unchanged testapp is not rebuilt across runs either.
var testImage struct {
	once sync.Once
	ref  string
	err  error
}

// TestImage is a tiny image built here with no pull: FROM scratch with the static binary of
// ./testapp (an HTTP server on $PORT answering / with $MESSAGE and /healthz; see its doc).
// It returns the image's name in the engine.
func (d *Docker) TestImage(t testing.TB) string {
	t.Helper()
	testImage.once.Do(func() { testImage.ref, testImage.err = buildTestImage(t, d.Client) })
	if testImage.err != nil {
		t.Fatalf("testenv: test image: %v", testImage.err)
	}
	return testImage.ref
}

func buildTestImage(t testing.TB, cli *client.Client) (string, error) {
	dir, err := os.MkdirTemp("", "gilliam-testapp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "testapp"), ".")
	cmd.Dir = filepath.Join(RepoRoot(t), "internal", "testenv", "testapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build testapp: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "testapp"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(bin)
	ref := "gilliam-test/testapp:" + hex.EncodeToString(sum[:6])

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	}
	dockerfile := "FROM scratch\nCOPY testapp /testapp\nENV PORT=8080\nEXPOSE 8080\nENTRYPOINT [\"/testapp\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	_, err = dockerbuild.Build(ctx, cli, dir, dockerbuild.Options{
		Tags:   []string{ref},
		Labels: map[string]string{TestLabel: "testapp"},
	})
	return ref, err
}

// PushImage copies an image from the engine to repo (a full reference without tag, such as
// reg.Addr + "/test/app") and returns it pinned by digest: repo@sha256:....
func PushImage(t testing.TB, engineRef, repo string) string {
	t.Helper()
	src, err := name.ParseReference(engineRef)
	if err != nil {
		t.Fatal(err)
	}
	img, err := engineImage(src)
	if err != nil {
		t.Fatalf("testenv: read %s from the engine: %v", engineRef, err)
	}
	dst, err := name.NewTag(repo+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatalf("testenv: push %s: %v", dst, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return repo + "@" + digest.String()
}

// PullImage pulls ref into the engine, as a host daemon would, and fails the test on error.
func (d *Docker) PullImage(t testing.TB, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc, err := d.Client.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		t.Fatalf("testenv: pull %s: %v", ref, err)
	}
	defer rc.Close()
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		t.Fatalf("testenv: pull %s: %v", ref, err)
	}
	if _, err := d.Client.ImageInspect(ctx, ref); err != nil {
		t.Fatalf("testenv: %s not in the engine after pull: %v", ref, err)
	}
}

// sanitize turns a test name into something a Docker label or name accepts.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if len(b) > 60 {
		b = b[:60]
	}
	return string(b)
}
