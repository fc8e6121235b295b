package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/go-connections/nat"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A three-host cluster starts; each host's engine pulls from the registry and publishes a
// port on the host's address that answers from the root namespace; a partitioned host is
// unreachable until healed; a powered-off host has no process left; and at cleanup nothing
// of the cluster is left: no namespace, veth, cgroup, mount, process or file.
func TestCluster(t *testing.T) {
	var name, dir string
	t.Run("run", func(t *testing.T) {
		c := New(t, Options{})
		name, dir = c.Name, c.Dir
		testenv.Report(t, "cluster-start", fmt.Sprintf("cluster: 3 hosts (namespace, engine, Consul client, host daemon each), 3 Consul servers, registry: started in %s",
			c.StartedIn.Round(100*time.Millisecond)))

		local := testenv.NewDocker(t)
		ref := testenv.PushImage(t, local.TestImage(t), c.Registry.Addr+"/test/app")
		h := c.Host(1)
		ctx := context.Background()
		rc, err := h.Docker.ImagePull(ctx, ref, image.PullOptions{})
		if err != nil {
			t.Fatalf("pull %s on %s: %v", ref, h.ID, err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		created, err := h.Docker.ContainerCreate(ctx,
			&container.Config{Image: ref, Env: []string{"MESSAGE=from " + h.ID}, ExposedPorts: nat.PortSet{"8080/tcp": {}}},
			&container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: h.Addr, HostPort: "18080"}}}}, nil, nil, "probe")
		if err != nil {
			t.Fatalf("create on %s: %v", h.ID, err)
		}
		if err := h.Docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			t.Fatalf("start on %s: %v", h.ID, err)
		}
		url := "http://" + h.Addr + ":18080/"
		testenv.Eventually(t, 20*time.Second, "the container answers from the root namespace", func() bool {
			return testenv.HTTPGet(url) == "from "+h.ID
		})

		// Partitioned: neither its container nor its agent answers; healed: both do.
		if err := h.Partition(); err != nil {
			t.Fatal(err)
		}
		if got := get(url); got != "" {
			t.Fatalf("a partitioned host answers: %q", got)
		}
		if err := h.Heal(); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the healed host answers", func() bool { return testenv.HTTPGet(url) == "from "+h.ID })

		// Powered off: nothing of it runs, its container neither; the others live.
		if err := h.PowerOff(); err != nil {
			t.Fatal(err)
		}
		if pids := append(netnsPIDs(h.Netns), cgroupPIDs(h.cgroup())...); len(pids) > 0 {
			t.Fatalf("processes of a powered-off host: %v", pids)
		}
		if _, err := c.Host(2).Docker.Ping(ctx); err != nil {
			t.Fatalf("another host's engine: %v", err)
		}
		// The Consul server leader, killed, is replaced; brought back, it rejoins.
		old, err := c.KillConsulLeader()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitConsulLeader(old, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := old.Start(); err != nil {
			t.Fatal(err)
		}
	})
	if name == "" {
		return
	}
	// Nothing left behind.
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", dir, err)
	}
	if ns, _ := os.ReadDir(netnsDir); len(ns) > 0 {
		for _, e := range ns {
			if strings.HasPrefix(e.Name(), name) {
				t.Errorf("network namespace %s left", e.Name())
			}
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err == nil {
		t.Errorf("veth %s left", name)
	}
	if m, _ := os.ReadFile("/proc/self/mounts"); strings.Contains(string(m), dir) {
		t.Errorf("mounts under %s left", dir)
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/" + name + "-*"); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
}

// get is GET url with a short timeout: the body, or "" on any failure.
func get(url string) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
