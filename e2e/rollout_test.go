package e2e

import (
	"context"
	"fmt"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// imageFormation is a gilliam.yml running the test app from the registry, at scale 3,
// with fast checks and roll-outs, and env set to the given lines.
func imageFormation(name, image string, env ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "formation: %s\nservices:\n  web:\n    type: image\n    image: %s\n    scale: 3\n    ports: [8080]\n", name, image)
	fmt.Fprintf(&b, "    check: {http: /healthz, interval: 1s, timeout: 1s}\n")
	// The deadline detects a roll-out that failed; a loaded machine takes 20s and more to
	// roll out 3 instances, and a revert there would fail a test that is only slow.
	fmt.Fprintf(&b, "    rollout: {max_parallel: 1, min_healthy: 2s, deadline: 3m}\n")
	if len(env) > 0 {
		b.WriteString("    env:\n")
		for _, e := range env {
			fmt.Fprintf(&b, "      %s\n", e)
		}
	}
	return b.String()
}

// A roll-out whose new release never passes its check is reverted at its deadline, and
// the old release never has fewer passing instances than the scale meanwhile.
func TestFailedRolloutIsReverted(t *testing.T) {
	parallel(t, 48*time.Second)
	c := newCluster(t)
	c.host("h")
	image := testenv.PushImage(t, c.docker.TestImage(t), c.reg.Addr+"/test/app")
	image = strings.Split(image, "@")[0] + ":latest"
	// Checks of 2s, not imageFormation's 1s: the old release's passing count is what this
	// test watches, and the host daemon checking runs in this test process, beside the other
	// parallel tests' daemons; a check stalled past 1s there (seen at -parallel 6) is the
	// machine's load, not a stopped instance. The broken release fails with a 500 at once.
	file := func(env ...string) string {
		f := strings.Replace(imageFormation("roll", image, env...), "check: {http: /healthz, interval: 1s, timeout: 1s}",
			"check: {http: /healthz, interval: 2s, timeout: 2s}", 1)
		return strings.Replace(f, "deadline: 3m", "deadline: 40s", 1) // the revert is what this test waits for
	}
	c.repo.Commit(map[string]string{"gilliam.yml": file("MESSAGE: one")}, "one")
	s := c.sync("a", nil)

	testenv.Eventually(t, 90*time.Second, "3 passing instances of release one", func() bool {
		return c.countAnswering("roll-web", "one") == 3
	})
	one := c.desired("roll", "web").Deployments[0].Release

	// Watch the old release while the bad one rolls out: its passing count must never drop
	// below 3.
	var mu stdsync.Mutex
	lowest := 3
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			n := 0
			for id := range c.passing("roll-web") {
				if strings.Contains(id, "-"+one[:8]+"-") {
					n++
				}
			}
			mu.Lock()
			lowest = min(lowest, n)
			mu.Unlock()
		}
	}()

	c.repo.Commit(map[string]string{"gilliam.yml": file("MESSAGE: two", "HEALTH: fail")}, "two, broken")
	waitLogPrefix(t, s, 60*time.Second, "roll-out of release", "started")
	failed := waitLogPrefix(t, s, 90*time.Second, "roll-out of release", "failed")
	close(stop)
	<-watched
	if lowest < 3 {
		t.Fatalf("the old release dropped to %d passing instances during the roll-out", lowest)
	}
	ds := c.desired("roll", "web")
	if len(ds.Deployments) != 1 || ds.Deployments[0].Release != one || ds.Deployments[0].Scale != 3 || ds.Failed == "" || ds.Rollout != nil {
		t.Fatalf("after the revert: %+v", ds)
	}
	testenv.Eventually(t, 30*time.Second, "the broken release's instances gone", func() bool {
		for id := range c.assigned() {
			if strings.Contains(id, "-"+ds.Failed[:8]+"-") {
				return false
			}
		}
		return c.countAnswering("roll-web", "one") == 3
	})
	history, err := c.store.History(context.Background(), "roll")
	if err != nil || !strings.Contains(fmt.Sprint(history), "failed") {
		t.Fatalf("history does not tell the failure: %v %v", history, err)
	}
	t.Logf("%s", failed.Msg)
}

// waitLogPrefix waits for a log line whose message starts with prefix and contains word.
func waitLogPrefix(t *testing.T, p *testenv.Process, limit time.Duration, prefix, word string) testenv.LogLine {
	t.Helper()
	var found testenv.LogLine
	testenv.Eventually(t, limit, fmt.Sprintf("a log %q... %q", prefix, word), func() bool {
		for _, l := range p.Lines() {
			if strings.HasPrefix(l.Msg, prefix) && strings.Contains(l.Msg, word) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}
