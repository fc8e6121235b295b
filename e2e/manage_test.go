package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// cli runs a gilliam-sync command against the cluster's Consul and returns its output,
// failing the test when it fails.
func (c *cluster) cli(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(cmd.Environ(), c.consul.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("gilliam-sync %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *cluster) testImage() string {
	c.t.Helper()
	pinned := testenv.PushImage(c.t, c.docker.TestImage(c.t), c.reg.Addr+"/test/app")
	return strings.Split(pinned, "@")[0] + ":latest"
}

// Rollback pins: after a rollback, a new commit makes a release but does not deploy it;
// unpin deploys it.
func TestRollbackPinsUntilUnpin(t *testing.T) {
	parallel(t, 41*time.Second)
	c := newCluster(t)
	c.host("h")
	image := c.testImage()
	file := func(msg string) map[string]string {
		return map[string]string{"gilliam.yml": strings.Replace(imageFormation("pin", image, "MESSAGE: "+msg), "scale: 3", "scale: 2", 1)}
	}
	serving := func(msg string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, "2 instances answering "+msg, func() bool {
			return c.countAnswering("pin-web", msg) == 2 && len(c.passing("pin-web")) == 2
		})
	}
	c.repo.Commit(file("one"), "one")
	s := c.sync("a", nil)
	serving("one")
	c.repo.Commit(file("two"), "two")
	serving("two")

	out := c.cli("rollback", "pin", "web")
	if !strings.Contains(out, "pinned") {
		t.Fatalf("rollback says: %s", out)
	}
	serving("one")

	three := c.repo.Commit(file("three"), "three")
	testenv.Eventually(t, 60*time.Second, "the commit's release to be written", func() bool {
		return strings.Contains(c.cli("releases", "pin", "web"), three[:12])
	})
	rels := c.cli("releases", "pin", "web")
	if strings.Count(rels, "\n") != 4 { // header and three releases
		t.Fatalf("releases after three commits:\n%s", rels)
	}
	time.Sleep(5 * time.Second) // passes of the sync loop: nothing may deploy while pinned
	if c.countAnswering("pin-web", "one") != 2 {
		t.Fatalf("a commit deployed while pinned")
	}
	if st := c.cli("status", "pin"); !strings.Contains(st, "pinned to") {
		t.Fatalf("status does not say the service is pinned:\n%s", st)
	}

	c.cli("unpin", "pin")
	serving("three")
	if h := c.cli("releases", "pin", "--history"); !strings.Contains(h, "rollback to") || !strings.Contains(h, "unpinned") {
		t.Fatalf("history:\n%s", h)
	}
	_ = s
}

// The scale set by hand holds until gilliam.yml's scale for the service changes.
func TestScaleHoldsUntilTheFileChanges(t *testing.T) {
	parallel(t, 26*time.Second)
	c := newCluster(t)
	c.host("h")
	image := c.testImage()
	file := func(scale, msg string) map[string]string {
		return map[string]string{"gilliam.yml": strings.Replace(imageFormation("sc", image, "MESSAGE: "+msg), "scale: 3", "scale: "+scale, 1)}
	}
	count := func(n int, msg string) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, "instances answering "+msg, func() bool {
			return c.countAnswering("sc-web", msg) == n && len(c.assigned()) == n
		})
	}
	c.repo.Commit(file("1", "one"), "one")
	c.sync("a", nil)
	count(1, "one")

	c.cli("scale", "sc", "web=3")
	count(3, "one")
	c.repo.Commit(file("1", "two"), "two: env only") // the file's scale did not change
	count(3, "two")
	c.repo.Commit(file("2", "two"), "the file's scale changes")
	count(2, "two")
	if st := c.cli("status", "sc"); !strings.Contains(st, "scale 2,") || strings.Contains(st, "by hand") {
		t.Fatalf("status after the file's scale changed:\n%s", st)
	}
}

// countPrefix counts the passing instances of a service whose answer starts with prefix
// and ends with their instance ID (as the hello example answers).
func (c *cluster) countPrefix(service, prefix string) int {
	n := 0
	for id, addr := range c.passing(service) {
		if testenv.HTTPGet("http://"+addr+"/") == prefix+id {
			n++
		}
	}
	return n
}
