package e2e

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// plan is Reconcile with a printing executor: what it prints for a commit is what the
// leader then does, first deploy and roll-out alike.
func TestPlanIsWhatHappens(t *testing.T) {
	parallel(t, 26*time.Second)
	c := newCluster(t)
	host := c.host("h")
	image := c.testImage()
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("plan", image, "MESSAGE: one")}, "one")

	plan := func() sync.PlanResult {
		t.Helper()
		var p sync.PlanResult
		out := c.cli("plan", "--repo", c.repo.URL, "--ref", "main", "--registry", c.reg.Addr, "--output", "json")
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("plan output %q: %v", out, err)
		}
		return p
	}
	ids := func(as map[string]string) []string {
		var out []string
		for id, h := range as {
			out = append(out, id+"@"+h)
		}
		sort.Strings(out)
		return out
	}

	// A first deploy: the release and the three instances on the one host.
	first := plan()
	if len(first.Services) != 1 || first.Services[0].Release == "" || first.Services[0].Action != "start at scale 3" {
		t.Fatalf("first plan: %+v", first)
	}
	planned := map[string]string{}
	for _, a := range first.Start {
		for _, i := range a.Instances {
			planned[i.ID] = a.Host
		}
	}
	s := c.sync("a", nil)
	testenv.Eventually(t, 90*time.Second, "3 passing instances of release one", func() bool { return c.countAnswering("plan-web", "one") == 3 })
	if got := c.desired("plan", "web").Latest; got != first.Services[0].Release {
		t.Fatalf("plan said release %s, the leader made %s", first.Services[0].Release, got)
	}
	if got, want := ids(c.assigned()), ids(planned); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("plan said instances %v, the leader placed %v", want, got)
	}
	if len(planned) != 3 || planned[first.Start[0].Instances[0].ID] != host {
		t.Fatalf("plan placed %v", planned)
	}

	// A new commit, planned while no leader runs, then deployed: the roll-out ends where
	// the plan said.
	s.Stop()
	c.repo.Commit(map[string]string{"gilliam.yml": imageFormation("plan", image, "MESSAGE: two")}, "two")
	second := plan()
	if len(second.Services) != 1 || !strings.HasPrefix(second.Services[0].Action, "roll out a new release") {
		t.Fatalf("second plan: %+v", second)
	}
	after := c.assigned()
	for _, a := range second.Stop {
		for _, i := range a.Instances {
			delete(after, i.ID)
		}
	}
	for _, a := range second.Start {
		for _, i := range a.Instances {
			after[i.ID] = a.Host
		}
	}
	c.sync("b", nil)
	testenv.Eventually(t, 90*time.Second, "3 passing instances of release two", func() bool {
		ds := c.desired("plan", "web")
		return c.countAnswering("plan-web", "two") == 3 && ds.Rollout == nil && ds.Latest == second.Services[0].Release
	})
	testenv.Eventually(t, 30*time.Second, "the assignments the plan said", func() bool {
		return strings.Join(ids(c.assigned()), " ") == strings.Join(ids(after), " ")
	})
}
