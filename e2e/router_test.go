package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The router's acceptance: `up` serves the hello formation at http://hello.localhost:PORT/,
// and after a commit the same URL answers with the new release, with not one failed
// request in between under 200 req/s: the roll-out by hostd (start new, wait for its check,
// deregister old, stop it) and the router (passing instances only, swapped at once) make a
// release change invisible to clients.
func TestRouterURLAcrossCommit(t *testing.T) {
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	docker := testenv.NewDocker(t)
	git := testenv.NewGitServer(t)
	repo := git.NewRepo(t, "hello")
	bin := testenv.Binary(t)
	hostID := fmt.Sprintf("e2e-router-%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() { docker.RemoveContainers(t, hostd.LabelHost, hostID) })
	t.Cleanup(func() { removeBuildCaches(t, docker, reg.Addr) })

	example := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "hello")
	repo.CommitDir(example, "", "hello")
	port := testenv.FreePort(t)
	up := testenv.Start(t, consul.Env(), bin, "up", "--repo", repo.URL, "--registry", reg.Addr,
		"--data", t.TempDir(), "--host-id", hostID, "--poll", "1s", "--log-format", "json",
		"--builder", testenv.Builder(t), "--router-listen", fmt.Sprintf("127.0.0.1:%d", port), "--router-access-log=false")
	up.WaitLog(time.Minute, "router serving")

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	get := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "hello.localhost"
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	client := &http.Client{Timeout: 30 * time.Second}
	testenv.Eventually(t, 5*time.Minute, "http://hello.localhost/ answering through the router", func() bool {
		code, body, _ := get(client)
		return code == 200 && strings.HasPrefix(body, "Hello, world from ")
	})

	// 200 req/s from now until the new release answers, and a little after.
	load := testenv.StartLoad(url, "hello.localhost", 200)

	main, err := os.ReadFile(filepath.Join(example, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(main), `"%s from %s\n"`, `"%s (v2) from %s\n"`, 1)
	repo.CommitOn("main", map[string]string{"main.go": changed}, "v2")
	testenv.Eventually(t, 5*time.Minute, "the same URL answering with the new release", func() bool {
		return load.Answered("Hello, world (v2) from ")
	})
	// Until the old instances are gone from Consul, and a second more.
	testenv.Eventually(t, 2*time.Minute, "the old release's instances gone", func() bool {
		entries, _, err := consul.Client.Health().Service("hello-web", "", false, nil)
		return err == nil && len(entries) == 2
	})
	time.Sleep(time.Second)
	load.Stop()
	sent, failed := load.Counts()

	testenv.Report(t, "e2e-router-commit", fmt.Sprintf(
		"e2e: %d requests at 200 req/s through the router across a commit's roll-out: %d ok, %d failed", sent, sent-failed, failed))
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the roll-out; first ones: %+v", failed, sent, load.Failures()[:min(5, failed)])
	}
}
