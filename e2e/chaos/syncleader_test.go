package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// Settings of the sync daemons' leader lock in this test, the ones docs/sync.md gives for a
// failover under 15 seconds.
var lockArgs = []string{"--lock-ttl", "10s", "--lock-delay", "1s"}

// The sync leader is killed (SIGKILL) in the middle of a roll-out of a service it built
// (a dockerfile service): the standby takes the lock, completes the roll-out, and builds
// nothing (the image is in the registry by its source's tag).
func TestChaosSyncLeaderKilled(t *testing.T) {
	const scale = 3
	c := newCluster(t, cluster.Options{SyncArgs: lockArgs})
	// The test app's image is in this machine's engine, where the sync daemons build: the
	// Dockerfile starts from it (a dockerfile build pulls nothing).
	base := testenv.NewDocker(t).TestImage(t)
	files := func(version, message string) map[string]string {
		return map[string]string{
			"gilliam.yml": "formation: sl\nservices:\n  web:\n    type: dockerfile\n    path: app\n" +
				fmt.Sprintf("    scale: %d\n    ports: [8080]\n", scale) +
				"    check: {http: /healthz, interval: 1s, timeout: 1s}\n" +
				// Slow enough steps that the leader dies with the roll-out half done.
				"    rollout: {max_parallel: 1, min_healthy: 5s, deadline: 3m}\n" +
				"    env:\n      MESSAGE: " + message + "\n",
			"app/Dockerfile": "FROM " + base + "\nCOPY version /version\n",
			"app/version":    version + "\n",
		}
	}
	c.Repo.Commit(files("1", "one"), "one")
	a := c.StartSync("a", nil)
	testenv.Eventually(t, 30*time.Second, "a leads", func() bool { return c.SyncLeader() == a })
	b := c.StartSync("b", nil)
	waitSpread(t, c, "sl-web", "one", scale, 3*time.Minute)

	committed := time.Now()
	c.Repo.Commit(files("2", "two"), "two")
	// Mid roll-out: the first instance of two passes, the old ones still run.
	testenv.Eventually(t, 2*time.Minute, "the roll-out of two half done", func() bool {
		return len(answering(c, "sl-web", "two")) >= 1
	})
	leader, err := c.KillSyncLeader()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	standby := a
	if leader == a {
		standby = b
	}
	twoBefore := len(answering(c, "sl-web", "two"))
	var leading time.Duration
	testenv.Eventually(t, 60*time.Second, "the standby leading", func() bool {
		if c.SyncLeader() == standby {
			leading = time.Since(killed)
			return true
		}
		return false
	})
	var done time.Duration
	testenv.Eventually(t, 3*time.Minute, "the roll-out done: 3 instances answering two, none one", func() bool {
		all, err := instances(c, "sl-web")
		if err != nil {
			return false
		}
		two, other := 0, 0
		for _, i := range all {
			if i.Passing && i.Answer == "two" {
				two++
			} else if i.Passing {
				other++
			}
		}
		ds := desired(c, "sl", "web")
		if two == scale && other == 0 && ds != nil && ds.Rollout == nil {
			done = time.Since(killed)
			return true
		}
		return false
	})
	builds := len(standby.Logs("building"))
	testenv.Report(t, "chaos-sync-leader", strings.Join([]string{
		fmt.Sprintf("sync leader killed with -9 mid roll-out (%d of %d new instances passing), lock TTL 10s, lock delay 1s:", twoBefore, scale),
		fmt.Sprintf("  standby leading after                 %s (target: under 15s)", since(leading)),
		fmt.Sprintf("  roll-out done after                   %s (from the commit: %s)", since(done), since(time.Since(committed))),
		fmt.Sprintf("  builds by the standby                 %d", builds),
	}, "\n"))
	if builds != 0 {
		t.Errorf("the standby built %d times: the leader's build should have been found", builds)
	}
}
