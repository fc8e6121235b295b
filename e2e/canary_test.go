package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A canary runs a release at a small scale beside the service's own, seen by Consul (and
// so by the router), until promoted (it rolls out) or aborted (it stops).
func TestCanaryPromoteAndAbort(t *testing.T) {
	parallel(t, 46*time.Second)
	c := newCluster(t)
	c.bin = testenv.RaceBinary(t) // its daemons under the race detector (docs/testing.md)
	c.host("h")
	image := c.testImage()
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("can", image, "MESSAGE: one")}, "one")
	c.sync("a", nil)
	testenv.Eventually(t, 90*time.Second, "3 instances of one", func() bool { return c.countAnswering("can-web", "one") == 3 })
	one := c.desired("can", "web").Latest
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("can", image, "MESSAGE: two")}, "two")
	testenv.Eventually(t, 90*time.Second, "3 instances of two", func() bool {
		ds := c.desired("can", "web")
		if ds.Failed != "" {
			t.Fatalf("the roll-out of two was reverted (%+v): the canary steps below assume two runs", ds)
		}
		return c.countAnswering("can-web", "two") == 3 && ds.Rollout == nil
	})

	out := c.cli("canary", "can", "web", "--release", one[:8], "--scale", "1")
	if !strings.Contains(out, "canary of release") {
		t.Fatalf("canary: %s", out)
	}
	testenv.Eventually(t, 60*time.Second, "the canary beside the service", func() bool {
		return c.countAnswering("can-web", "one") == 1 && c.countAnswering("can-web", "two") == 3
	})
	if out := c.cli("status", "can"); !strings.Contains(out, "canary: release "+one[:12]) {
		t.Fatalf("status does not show the canary:\n%s", out)
	}
	if out := c.cli("releases", "can"); !strings.Contains(out, "canary") {
		t.Fatalf("releases does not mark the canary:\n%s", out)
	}

	c.cli("canary", "promote", "can", "web")
	testenv.Eventually(t, 90*time.Second, "the promoted canary rolled out", func() bool {
		ds := c.desired("can", "web")
		return c.countAnswering("can-web", "one") == 3 && c.countAnswering("can-web", "two") == 0 && ds.Rollout == nil && ds.Canary == nil
	})

	two := ""
	rels, err := c.store.Releases(t.Context(), "can")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		if r.ID != one {
			two = r.ID
		}
	}
	c.cli("canary", "can", "web", "--release", two, "--scale", "2")
	testenv.Eventually(t, 60*time.Second, "a second canary", func() bool { return c.countAnswering("can-web", "two") == 2 })
	c.cli("canary", "abort", "can", "web")
	testenv.Eventually(t, 60*time.Second, "the aborted canary gone", func() bool {
		return c.countAnswering("can-web", "two") == 0 && c.countAnswering("can-web", "one") == 3 && len(c.assigned()) == 3
	})
}
