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

// What changes configuration and not code makes a new release from the same image, with no
// build: a commit that edits only gilliam.yml, in a service whose path is the repository root
// (what the README's walk-through promises), then a config var set with the CLI, whose value
// the running instances get and status, release listings and logs never show. One test, one
// build of the hello example: both halves need it serving first.
func TestConfigChangesReleaseWithoutBuild(t *testing.T) {
	parallel(t, 82*time.Second)
	c := newCluster(t)
	c.host("h")
	const f = "helloyml" // the hello example, named for this test
	example := helloAs(t, f)
	c.repo.CommitDir(example, "", "hello")
	s := c.sync("a", nil)
	testenv.Eventually(t, 6*time.Minute, "hello serving", func() bool { return c.countPrefix(f+"-web", "Hello, world from ") == 2 })
	before := c.desired(f, "web")
	builds := func() int { return len(s.Logs("building", "service=web")) }
	if builds() != 1 {
		t.Fatalf("first deploy: %d builds", builds())
	}

	// 1. A commit editing gilliam.yml alone.
	file, err := os.ReadFile(filepath.Join(example, "gilliam.yml"))
	if err != nil {
		t.Fatal(err)
	}
	c.repo.Commit(map[string]string{"gilliam.yml": strings.Replace(string(file), "Hello, world", "Bonjour", 1)}, "bonjour")
	testenv.Eventually(t, 2*time.Minute, "the new release serving", func() bool {
		ds := c.desired(f, "web")
		return ds.Rollout == nil && ds.Latest != before.Latest && c.countPrefix(f+"-web", "Bonjour from ") == 2
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

	// 2. A config var: it overrides the file's GREETING.
	const secret = "Bonjour-s3cr3t"
	out := c.cli("env", "set", f, "GREETING="+secret)
	if strings.Contains(out, secret) {
		t.Fatalf("env set echoes the value: %s", out)
	}
	testenv.Eventually(t, 2*time.Minute, "instances with the new value", func() bool {
		return c.countPrefix(f+"-web", secret+" from ") == 2
	})
	if builds() != 1 {
		t.Fatalf("a config change built: %d builds", builds())
	}
	all, err := c.store.Releases(t.Context(), f)
	if err != nil || len(all) != 3 || all[0].Cause != "config" || all[0].Image != rels[before.Latest] {
		t.Fatalf("releases after the config change: %+v %v", all, err)
	}
	for _, where := range map[string]string{
		"status":      c.cli("status", f),
		"status json": c.cli("status", f, "--output", "json"),
		"releases":    c.cli("releases", f) + c.cli("releases", f, "--output", "json") + c.cli("releases", f, "--history"),
		"env list":    c.cli("env", "list", f),
		"sync log":    s.Output(),
	} {
		if strings.Contains(where, secret) {
			t.Fatalf("the config value shows in:\n%s", where)
		}
	}
	if l := c.cli("env", "list", f, "--reveal"); !strings.Contains(l, "GREETING="+secret) {
		t.Fatalf("env list --reveal: %s", l)
	}
	// What the Consul UI's Key/Value tab shows: every key, and no value in clear.
	pairs, _, err := c.consul.Client.KV().List("", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if strings.Contains(string(p.Value), secret) {
			t.Fatalf("Consul key %s holds the config var's value in clear", p.Key)
		}
	}
	if len(pairs) < 10 {
		t.Fatalf("only %d keys read", len(pairs))
	}
	// Nor do the catalog's tags or meta (release IDs among them).
	svcs, _, err := c.consul.Client.Catalog().Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name := range svcs {
		entries, _, _ := c.consul.Client.Catalog().Service(name, "", nil)
		for _, e := range entries {
			if strings.Contains(fmt.Sprint(e.ServiceTags, e.ServiceMeta), secret) {
				t.Fatalf("service %s shows the value", name)
			}
		}
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
