package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A monorepo of two services: a commit that touches one service's folder builds and rolls
// out that service only; the other keeps its release and its containers.
func TestMonorepoBuildsOnlyWhatChanged(t *testing.T) {
	parallel(t, 80*time.Second)
	c := newCluster(t)
	c.host("h")
	example := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "monorepo")
	c.repo.CommitDir(example, "", "quotes")
	s := c.sync("a", nil)

	testenv.Eventually(t, 6*time.Minute, "both services deployed and passing", func() bool {
		return len(c.passing("quotes-api")) == 2 && len(c.passing("quotes-frontend")) == 1
	})
	frontend := c.desired("quotes", "frontend").Deployments[0].Release
	api := c.desired("quotes", "api").Deployments[0].Release
	frontendContainers := fmt.Sprint(c.passing("quotes-frontend"))
	builds := func(service string) int { return len(s.Logs("building", "service="+service)) }
	if builds("api") != 1 || builds("frontend") != 1 {
		t.Fatalf("first deploy: %d api builds, %d frontend builds; want 1 each", builds("api"), builds("frontend"))
	}

	src, err := os.ReadFile(filepath.Join(example, "services", "api", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	c.repo.Commit(map[string]string{"services/api/main.go": string(src) + "\n// a change to the api only\n"}, "api only")
	testenv.Eventually(t, 3*time.Minute, "the api's new release rolled out", func() bool {
		ds := c.desired("quotes", "api")
		return ds.Rollout == nil && len(ds.Deployments) == 1 && ds.Deployments[0].Release != api && len(c.passing("quotes-api")) == 2
	})
	if builds("api") != 2 || builds("frontend") != 1 {
		t.Fatalf("after a commit to services/api: %d api builds, %d frontend builds; want 2 and 1", builds("api"), builds("frontend"))
	}
	if got := c.desired("quotes", "frontend").Deployments[0].Release; got != frontend {
		t.Fatalf("the frontend's release changed (%s -> %s) though its folder did not", frontend, got)
	}
	if got := fmt.Sprint(c.passing("quotes-frontend")); got != frontendContainers {
		t.Fatalf("the frontend's instances changed: %s -> %s", frontendContainers, got)
	}
	if !strings.Contains(fmt.Sprint(s.Logs("build skipped: this source was built already", "service=frontend")), "frontend") {
		t.Fatal("the frontend was not looked up and skipped")
	}
}
