package build_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The hello example builds with the offline builder through pack's library, lands in the
// registry by digest, and the engine runs what it pulls from there.
func TestBuildpacksBuildPublishRun(t *testing.T) {
	d := testenv.NewDocker(t)
	reg := testenv.NewRegistry(t)
	b, err := build.NewBuildpacks(build.BuildpacksConfig{Builder: testenv.Builder(t), Registry: reg.Addr})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := b.Build(ctx, build.Request{
		Formation: "hello", Service: "web",
		Source: filepath.Join(testenv.RepoRoot(t), "examples", "formations", "hello"),
		Tag:    "test", Log: &log,
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}
	t.Logf("built %s in %s", res.Image, res.Duration.Round(time.Millisecond))
	if testing.Verbose() {
		t.Log(log.String())
	}
	if !strings.HasPrefix(res.Image, reg.Addr+"/hello/web@sha256:") {
		t.Fatalf("image %q is not pinned by digest in the test registry", res.Image)
	}

	d.PullImage(t, res.Image)
	created, err := d.Client.ContainerCreate(ctx,
		&container.Config{Image: res.Image, Env: []string{"PORT=8080", "GREETING=built here"},
			Labels: d.Label, ExposedPorts: nat.PortSet{"8080/tcp": {}}},
		&container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1"}}}},
		nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	inspect, err := d.Client.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://127.0.0.1:" + inspect.NetworkSettings.Ports["8080/tcp"][0].HostPort + "/"
	testenv.Eventually(t, 20*time.Second, "the built service to answer", func() bool {
		return strings.HasPrefix(testenv.HTTPGet(url), "built here from")
	})
}
