package chaos

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The counter example deployed on a three-host cluster: web on host 1 calls its internal
// store on host 2 or 3 by name (store:7000); a value written through web reads back. Its two
// services are the example's code and settings, built by the test with the Go toolchain
// into images rather than by the buildpack builder: two cold buildpack builds take minutes
// on a loaded machine, and the builds are not what is under test here. A container of another formation (on host 1) and a process in
// the test's root namespace both fail to connect to the store, by any address they could
// know. The store's host loses power: web's calls succeed again once the store is
// re-placed on the other host, with no configuration change anywhere.
func TestChaosSiblingsAcrossHosts(t *testing.T) {
	start := time.Now()
	c := newCluster(t, cluster.Options{HostLabels: func(n int) string {
		if n == 1 {
			return "role=web"
		}
		return "role=store"
	}})
	files := counterExample(t)
	example := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "counter")
	webImage := goImage(t, filepath.Join(example, "web"), c.Registry.Addr+"/counter/web")
	storeImage := goImage(t, filepath.Join(example, "store"), c.Registry.Addr+"/counter/store")
	// The images for the paths, where each service may run, and a store checked every
	// second: the test's own; the example's services and settings otherwise unchanged.
	yml := strings.NewReplacer(
		"\n    path: web ", "\n    image: "+webImage+" ",
		"\n    path: store\n", "\n    image: "+storeImage+"\n",
	).Replace(files["gilliam.yml"])
	// Issue 16's test moves the store when its host dies: without the example's volume (which
	// holds the store on its host, e2e/TestCounterExample) and release phase (its command is
	// the buildpack image's, not this image's).
	yml = strings.NewReplacer(
		"    volumes: [/data]             # kept across releases and restarts; holds it on its host\n", "",
		"    release:                     # once per release, before it serves: a migration\n      command: app migrate       # the buildpack's binary is app\n      timeout: 2m\n", "",
	).Replace(yml)
	if strings.Contains(yml, "volumes:") || strings.Contains(yml, "release:") {
		t.Fatalf("the counter example's volume or release phase moved; update the test:\n%s", yml)
	}
	yml = strings.NewReplacer(
		"\n  web:\n", "\n  web:\n    constraints: [\"role=web\"]\n",
		"\n  store:\n", "\n  store:\n    constraints: [\"role=store\"]\n    check: {tcp: true, interval: 1s, timeout: 1s}\n",
	).Replace(yml)
	if !strings.Contains(yml, webImage) || !strings.Contains(yml, storeImage) {
		t.Fatalf("the counter example's paths moved; update the test:\n%s", yml)
	}
	files = map[string]string{"gilliam.yml": yml}
	files["other/gilliam.yml"] = "formation: other\nservices:\n  web:\n    image: " + pushApp(t, c) +
		"\n    ports: [8080]\n    constraints: [\"role=web\"]\n    check: {http: /healthz, interval: 1s, timeout: 1s}\n"
	c.Repo.Commit(files, "counter and other")
	c.StartSyncConfig("a", nil, fmt.Sprintf("repos:\n  - url: %s\n    branches: [main]\n    files: [gilliam.yml, other/gilliam.yml]\n    poll_interval: 1s\n", c.Repo.URL))

	var web, store, other instance
	testenv.Eventually(t, 5*time.Minute, "counter's web and store and other's web passing", func() bool {
		ws, ss, ots := passingOf(c, "counter-web"), passingOf(c, "counter-store"), passingOf(c, "other-web")
		if len(ws) == 0 || len(ss) != 1 || len(ots) != 1 {
			return false
		}
		web, store, other = ws[0], ss[0], ots[0]
		return true
	})
	deployed := time.Since(start)
	if web.Host == store.Host {
		t.Fatalf("web and store on one host (%s): the constraints did not hold", web.Host)
	}
	webURL := "http://" + web.Addr
	testenv.Eventually(t, time.Minute, "web counting visits in the store", func() bool {
		return strings.HasPrefix(get(webURL+"/"), "hello, visitor number")
	})
	if code := put(webURL+"/kv/color", "blue"); code != http.StatusNoContent {
		t.Fatalf("PUT /kv/color through web: %d", code)
	}
	if got := get(webURL + "/kv/color"); got != "blue" {
		t.Fatalf("GET /kv/color through web: %q, want blue", got)
	}

	// A process in the root namespace (a machine that is not a gilliam host).
	storeHost := c.HostByID(store.Host)
	for _, addr := range []string{store.Addr, net.JoinHostPort(storeHost.Addr, "7000")} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("the root namespace connected to the store at %s", addr)
		}
	}
	mesh := store.Meta[hostd.MetaMesh]
	if err := testenv.SelfSignedMeshCall(mesh, store.ID, 7000); err == nil {
		t.Errorf("the store host's mesh (%s) let a client with a self-signed certificate through", mesh)
	}

	// A container of another formation, on web's host.
	webHost := c.HostByID(web.Host)
	info, err := webHost.Docker.NetworkInspect(context.Background(), names.NetworkName(web.Host, "counter"), network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gateway := info.IPAM.Config[0].Gateway
	for _, u := range []string{
		"http://store:7000/kv/color",                                       // the name is not its formation's
		"http://" + net.JoinHostPort(gateway, "7000") + "/kv/color",        // counter's proxy on this host
		"http://" + store.Addr + "/kv/color",                               // the store's container
		"http://" + net.JoinHostPort(storeHost.Addr, "7000") + "/kv/color", // the store's host
	} {
		got := fetchFrom(other.Addr, u)
		if !strings.HasPrefix(got, "error:") {
			t.Errorf("a container of formation other fetched %s: %q", u, got)
		}
	}

	// The store's host loses power; web's calls come back once the store is elsewhere.
	off := time.Now()
	if err := storeHost.PowerOff(); err != nil {
		t.Fatal(err)
	}
	var back time.Duration
	var moved instance
	testenv.Eventually(t, 3*time.Minute, "web's calls to the store succeeding again", func() bool {
		if !strings.HasPrefix(get(webURL+"/"), "hello, visitor number") {
			return false
		}
		back = time.Since(off)
		return true
	})
	if ss := passingOf(c, "counter-store"); len(ss) == 1 {
		moved = ss[0]
	}
	if moved.Host == storeHost.ID || moved.Host == web.Host {
		t.Errorf("the store answers from %q, want the third host", moved.Host)
	}
	testenv.Report(t, "chaos-siblings", strings.Join([]string{
		"siblings by name across hosts (examples/formations/counter, its services built with the Go toolchain, 3 hosts):",
		fmt.Sprintf("  test start to web and its store passing             %s (of which the cluster's start %s)", since(deployed), since(c.StartedIn)),
		fmt.Sprintf("  store's host powered off to web's calls succeeding    %s (store re-placed on %s; no configuration change)", since(back), moved.Host),
		fmt.Sprintf("  test total                                            %s", since(time.Since(start))),
	}, "\n"))
}

// goImage builds the Go module in dir into a static binary, makes it an image of one
// layer (the binary as /app, its entrypoint), pushes it to repo and returns it by digest.
func goImage(t *testing.T, dir, repo string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "app")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", dir, err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg})
	tw.Write(bin)
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Entrypoint: []string{"/app"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(repo+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return repo + "@" + digest.String()
}

// counterExample reads examples/formations/counter, by path in the repository.
func counterExample(t *testing.T) map[string]string {
	t.Helper()
	root := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "counter")
	files := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// passingOf lists a service's passing instances.
func passingOf(c *cluster.Cluster, service string) []instance {
	entries, _, err := c.Control.Client.Health().Service(service, "", true, nil)
	if err != nil {
		return nil
	}
	var out []instance
	for _, e := range entries {
		out = append(out, instance{ID: e.Service.Meta["instance"], Host: e.Service.Meta["host"], Release: e.Service.Meta["release"],
			Addr: fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port), Passing: true, Meta: e.Service.Meta})
	}
	return out
}

// fetchFrom has the test app at addr GET u (its /fetch): what it got, or "error: ...".
func fetchFrom(addr, u string) string {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/fetch?url=" + url.QueryEscape(u))
	if err != nil {
		return "test: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func put(u, body string) int {
	req, err := http.NewRequest(http.MethodPut, u, strings.NewReader(body))
	if err != nil {
		return 0
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
