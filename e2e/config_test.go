package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The daemon from a gilliam-sync.yml: a signed webhook makes it notice a push at once
// (the repository is polled only every hour), and the leader runs the build garbage
// collection on its schedule.
func TestSyncFromConfigFile(t *testing.T) {
	parallel(t, 7*time.Second)
	c := newCluster(t)
	c.host("h")
	image := c.testImage()
	c.repo.Commit(map[string]string{"gilliam.yml": strings.Replace(imageFormation("cf", image, "MESSAGE: one"), "scale: 3", "scale: 1", 1)}, "one")

	hooks := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	config := filepath.Join(t.TempDir(), "gilliam-sync.yml")
	writeFile(t, config, fmt.Sprintf(`# the sync daemon of this test
data: %s
registry: %s
builder: %s
interval: 1s
leader: {id: cf, lock_ttl: 10s, lock_delay: 1s}
builds: {gc_interval: 2s}
webhooks: {listen: %s}
repos:
  - url: %s
    forge: github
    poll_interval: 1h
    webhook: {secret_env: TEST_HOOK_SECRET}
`, t.TempDir(), c.reg.Addr, testenv.Builder(t), hooks, c.repo.URL))
	s := testenv.Start(t, append(c.consul.Env(), "TEST_HOOK_SECRET=s3cret"), c.bin, "sync", "--config", config, "--log-format", "json")
	s.WaitLog(30*time.Second, "webhook receiver listening")
	testenv.Eventually(t, 60*time.Second, "release one serving", func() bool { return c.countAnswering("cf-web", "one") == 1 })

	// A push, then a hook: the daemon polls at once, not in an hour.
	c.repo.Commit(map[string]string{"gilliam.yml": strings.Replace(imageFormation("cf", image, "MESSAGE: two"), "scale: 3", "scale: 1", 1)}, "two")
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, c.repo.URL))
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+hooks+"/hooks/github", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "d1")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("webhook answered %s", resp.Status)
	}
	testenv.Eventually(t, 60*time.Second, "release two serving after the hook", func() bool { return c.countAnswering("cf-web", "two") == 1 })

	s.WaitLog(30*time.Second, "build garbage collected")
}

// A configuration file with a mistake is refused before anything starts, saying where.
func TestSyncConfigFileErrors(t *testing.T) {
	parallel(t, 1*time.Second)
	bin := testenv.Binary(t)
	config := filepath.Join(t.TempDir(), "gilliam-sync.yml")
	writeFile(t, config, "registry: 127.0.0.1:5000\nrepos:\n  - url: https://example.com/a.git\n    brances: [main]\n")
	out, err := exec.Command(bin, "sync", "--config", config).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), config) || !strings.Contains(string(out), "line 4") || !strings.Contains(string(out), "brances") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	writeFile(t, config, "repos:\n  - url: https://example.com/a.git\n")
	out, err = exec.Command(bin, "sync", "--config", config).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "registry: required") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
