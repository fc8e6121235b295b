package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// The Consul server leader is killed (SIGKILL) as a roll-out starts: the servers elect
// another, the roll-out completes, no host stops an instance it is still assigned, and no
// release is lost.
func TestChaosConsulLeaderKilled(t *testing.T) {
	const scale = 3
	c := newCluster(t, cluster.Options{})
	image := pushApp(t, c)
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("cl", image, scale, "MESSAGE: one")}, "one")
	c.StartSync("a", nil)
	waitSpread(t, c, "cl-web", "one", scale, 3*time.Minute)
	one := desired(c, "cl", "web").Latest

	stops := startWatchStops(t, c)
	committed := time.Now()
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("cl", image, scale, "MESSAGE: two")}, "two")
	testenv.Eventually(t, 60*time.Second, "the roll-out of two started", func() bool {
		ds := desired(c, "cl", "web")
		return ds != nil && ds.Rollout != nil && ds.Rollout.From == one
	})
	old, err := c.KillConsulLeader()
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	leader, err := c.WaitConsulLeader(old, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Since(killed)

	var done time.Duration
	testenv.Eventually(t, 3*time.Minute, "the roll-out done: 3 instances answering two, none one", func() bool {
		all, err := instances(c, "cl-web")
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
		ds := desired(c, "cl", "web")
		if two == scale && other == 0 && ds != nil && ds.Rollout == nil {
			done = time.Since(committed)
			return true
		}
		return false
	})
	stopped := stops.end()
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rels, err := c.Store.Releases(ctx, "cl")
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, r := range rels {
		ids[r.ID] = true
	}
	two := desired(c, "cl", "web").Latest
	testenv.Report(t, "chaos-consul-leader", strings.Join([]string{
		fmt.Sprintf("Consul server leader (%s) killed with -9 as a roll-out of scale %d starts (3 servers):", old.Name, scale),
		fmt.Sprintf("  new leader (%s) after                 %s", leader.Name, since(elected)),
		fmt.Sprintf("  roll-out done, from the commit, after   %s", since(done)),
		fmt.Sprintf("  instances stopped while assigned        %d", len(stopped)),
		fmt.Sprintf("  releases kept                           %d", len(rels)),
	}, "\n"))
	if len(stopped) > 0 {
		t.Errorf("hosts stopped instances they were still assigned: %v", stopped)
	}
	if !ids[one] || !ids[two] || one == two {
		t.Errorf("releases after the election: %v, want %s and %s", ids, one, two)
	}
}
