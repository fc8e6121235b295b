package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The time a roll-out of 3 instances takes (max_parallel 1, min_healthy 2s, checks every
// 1s), from its start to its end as the leader logs them: the leader follows health with
// a blocking query, so each step follows a check's change at once.
func TestRolloutTime(t *testing.T) {
	c := newCluster(t)
	c.host("h")
	image := c.testImage()
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("rt", image, "MESSAGE: one")}, "one")
	s := c.sync("a", nil)
	testenv.Eventually(t, 90*time.Second, "3 passing instances of release one", func() bool { return c.countAnswering("rt-web", "one") == 3 })
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("rt", image, "MESSAGE: two")}, "two")
	started := waitLogPrefix(t, s, 60*time.Second, "roll-out of release", "started")
	done := waitLogPrefix(t, s, 90*time.Second, "roll-out of release", "done")
	took := done.Time.Sub(started.Time)
	testenv.Report(t, "rollout-time", fmt.Sprintf("Roll-out of 3 instances (max_parallel 1, min_healthy 2s, check interval 1s): %s from start to done",
		took.Round(10*time.Millisecond)))
}
