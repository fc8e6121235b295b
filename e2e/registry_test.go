package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// gilliam-sync up with its embedded registry, which asks who you are: up generates a push
// and a pull credential (files 0600), the builder publishes with the first (pack and the
// lifecycle included), the host daemon pulls with the second, and anyone else, the Docker
// engine without credentials included, is refused.
func TestUpWithItsOwnRegistry(t *testing.T) {
	parallel(t, 15*time.Second)
	const f = "helloreg" // the hello example, named for this test
	consul := testenv.NewConsul(t)
	docker := testenv.NewDocker(t)
	git := testenv.NewGitServer(t)
	repo := git.NewRepo(t, "hello")
	bin := testenv.Binary(t)
	hostID := fmt.Sprintf("e2e-reg-%d", time.Now().UnixNano()%1e9)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	data := t.TempDir()
	ctx := context.Background()
	t.Cleanup(func() { docker.RemoveContainers(t, hostd.LabelHost, hostID) })
	t.Cleanup(func() { removeImagesOf(docker, addr) })
	for _, v := range []string{build.CacheVolume(addr, f, "web"), build.LaunchCacheVolume(addr, f, "web")} {
		if _, err := docker.Client.VolumeInspect(ctx, v); err != nil { // not a cache another test warmed
			t.Cleanup(func() { docker.Client.VolumeRemove(context.Background(), v, true) })
		}
	}

	repo.CommitDir(helloAs(t, f), "", "hello")
	metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	testenv.Start(t, consul.Env(), bin, "up", "--repo", repo.URL, "--registry-listen", addr,
		"--data", data, "--host-id", hostID, "--poll", "1s", "--log-format", "json",
		"--builder", testenv.Builder(t), "--metrics", metrics, "--router-listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)))
	waitServingAs(t, consul, f+"-web", "Hello, world from ")

	// up serves every daemon's metrics on one address, and the logs of its host and its
	// builds behind the token it wrote: read here as from another machine (no build data).
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), consul.Env()...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gilliam-sync %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	token := filepath.Join(data, "logs-token")
	if out := cli("logs", f, "--token-file", token); !strings.Contains(out, " "+hostID+" | ") {
		t.Errorf("instance logs through up:\n%s", out)
	}
	if out := cli("logs", "build", f, "web", "--data", t.TempDir(), "--token-file", token); !strings.Contains(out, "===> EXPORTING") && !strings.Contains(out, "Saving") {
		t.Errorf("build log read from another machine:\n%s", out)
	}
	got := scrape(t, metrics)
	for _, w := range []string{`gilliam_build_info{daemon="up"}`, `gilliam_sync_leader`, `gilliam_router_routes`,
		`gilliam_build_duration_seconds{formation="` + f + `",service="web",result="built"}`,
		`gilliam_instances{host="` + hostID + `",state="running"}`, `gilliam_poll_rounds_total{result="ok"}`, `gilliam_consul_requests_total{api="txn"}`} {
		if !hasMetric(got, w) {
			t.Errorf("up's metrics: no %s", w)
		}
	}

	rels, err := state.NewStore(consul.Client, "").Releases(ctx, f)
	if err != nil || len(rels) != 1 || !strings.HasPrefix(rels[0].Image, addr+"/"+f+"/web@sha256:") {
		t.Fatalf("releases %v %v: want one, its image in the embedded registry %s", rels, err, addr)
	}

	for _, f := range []string{"registry-credentials.json", "registry-auth/push/config.json", "registry-auth/pull/config.json"} {
		info, err := os.Stat(filepath.Join(data, f))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, info.Mode().Perm())
		}
	}
	resp, err := http.Get("http://" + addr + "/v2/" + f + "/web/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("anonymous read: %s, WWW-Authenticate %q", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	// The engine, without credentials, is refused an image of the registry it does not hold
	// (the builder's copy of its run image there).
	rc, err := docker.Client.ImagePull(ctx, addr+"/gilliam/stack-run:busybox", image.PullOptions{})
	msg := fmt.Sprint(err)
	if err == nil {
		msg = readAll(rc)
		rc.Close()
	}
	if !strings.Contains(strings.ToLower(msg), "unauthorized") && !strings.Contains(msg, "401") && !strings.Contains(msg, "no basic auth credentials") {
		t.Errorf("anonymous pull through the engine: %s", msg)
	}
	t.Logf("anonymous pull through the engine: %s", strings.TrimSpace(msg))
}

func readAll(rc interface{ Read([]byte) (int, error) }) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := rc.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// removeImagesOf removes from the engine the images named in registry addr.
func removeImagesOf(d *testenv.Docker, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	images, err := d.Client.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		return
	}
	for _, img := range images {
		for _, ref := range append(img.RepoTags, img.RepoDigests...) {
			if strings.HasPrefix(ref, addr+"/") {
				d.Client.ImageRemove(ctx, ref, image.RemoveOptions{})
			}
		}
	}
}
