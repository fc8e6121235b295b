package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A commit that edits only gilliam.yml, in a service whose path is the repository root,
// makes a new release from the same image with no build: what the README's walk-through
// promises.
func TestConfigOnlyCommitDoesNotBuild(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.host("h")
	const f = "helloyml" // the hello example, named for this test
	example := helloAs(t, f)
	c.repo.CommitDir(example, "", "hello")
	s := c.sync("a", nil)
	testenv.Eventually(t, 6*time.Minute, "hello serving", func() bool { return c.countStarting(f+"-web", "Hello, world") == 2 })
	before := c.desired(f, "web")
	builds := func() int { return len(s.Logs("building", "service=web")) }
	if builds() != 1 {
		t.Fatalf("first deploy: %d builds", builds())
	}

	file, err := os.ReadFile(filepath.Join(example, "gilliam.yml"))
	if err != nil {
		t.Fatal(err)
	}
	c.repo.Commit(map[string]string{"gilliam.yml": strings.Replace(string(file), "Hello, world", "Bonjour", 1)}, "bonjour")
	testenv.Eventually(t, 2*time.Minute, "the new release serving", func() bool {
		ds := c.desired(f, "web")
		return ds.Rollout == nil && ds.Latest != before.Latest && c.countStarting(f+"-web", "Bonjour") == 2
	})
	if builds() != 1 {
		t.Fatalf("an edit of gilliam.yml alone built again (%d builds)", builds())
	}
	rels := map[string]string{}
	for _, id := range []string{before.Latest, c.desired(f, "web").Latest} {
		r, err := c.store.Release(t.Context(), f, id)
		if err != nil || r == nil {
			t.Fatalf("release %s: %v", id, err)
		}
		rels[id] = r.Image
	}
	if len(rels) != 2 || rels[before.Latest] != rels[c.desired(f, "web").Latest] {
		t.Fatalf("the image changed with gilliam.yml alone: %v", rels)
	}
}

// countStarting counts the passing instances of a Consul service whose answer to GET /
// starts with prefix.
func (c *cluster) countStarting(service, prefix string) int {
	n := 0
	for _, addr := range c.passing(service) {
		if strings.HasPrefix(testenv.HTTPGet("http://"+addr+"/"), prefix) {
			n++
		}
	}
	return n
}
