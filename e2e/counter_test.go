package e2e

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The counter example, as it is in the repository, deployed end to end: both services
// built with buildpacks; web's release phase (`app migrate`) runs before web serves; web
// reaches its internal store by name; a value written through web is read back through web
// after a new release of both services (the store replaced on its host, with its volume;
// web's migration run again) and after the host daemon restarts; `volumes` lists the
// store's volume.
func TestCounterExample(t *testing.T) {
	parallel(t, 83*time.Second)
	c := newCluster(t)
	h := c.restartableHost("h")
	c.repo.CommitDir(filepath.Join(testenv.RepoRoot(t), "examples", "formations", "counter"), "", "the counter example")
	start := time.Now()
	c.sync("a", nil)

	ctx := context.Background()
	settled := func(what string) (map[string]*state.Release, string) {
		t.Helper()
		var web string
		var rels map[string]*state.Release
		testenv.Eventually(t, 12*time.Minute, what, func() bool {
			d, _, err := c.store.Desired(ctx, "counter")
			if err != nil || d == nil || len(d.Services) != 2 {
				return false
			}
			rels = map[string]*state.Release{}
			for name, ds := range d.Services {
				if ds.Rollout != nil || len(ds.Deployments) != 1 || ds.Deployments[0].Release != ds.Latest {
					return false
				}
				rels[name] = &state.Release{ID: ds.Latest}
			}
			if p := d.Services["web"].ReleasePhase; p == nil || p.Release != rels["web"].ID || p.State != state.PhaseSucceeded {
				return false
			}
			webs := c.passing("counter-web")
			if len(webs) != 2 || len(c.passing("counter-store")) != 1 {
				return false
			}
			for _, addr := range webs {
				web = "http://" + addr
			}
			return strings.HasPrefix(testenv.HTTPGet(web+"/"), "hello, visitor number ")
		})
		return rels, web
	}
	first, web := settled("counter serving: web's migration done, web calling its store")
	deployed := time.Since(start)

	put := func(url, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("PUT %s: %s %s", url, resp.Status, b)
		}
	}
	put(web+"/kv/color", "blue")
	if got := testenv.HTTPGet(web + "/kv/color"); got != "blue" {
		t.Fatalf("read back through web: %q", got)
	}
	if got := testenv.HTTPGet(web + "/kv/schema"); got != "1" {
		t.Fatalf("the release phase's migration left schema %q in the store", got)
	}
	if out := c.cli("volumes", "counter"); !strings.Contains(out, "store") || !strings.Contains(out, h.id) || !strings.Contains(out, "/data") {
		t.Fatalf("volumes counter:\n%s", out)
	}

	// A new release of both services (a config var): the store is replaced on its host
	// with its volume, web's migration runs again, the value is still there.
	c.cli("env", "set", "counter", "COLOR_DEFAULT=none")
	rolled := time.Now()
	var second map[string]*state.Release
	testenv.Eventually(t, 5*time.Minute, "a new release of both settled", func() bool {
		d, _, _ := c.store.Desired(ctx, "counter")
		return d != nil && d.Services["web"].Latest != first["web"].ID && d.Services["store"].Latest != first["store"].ID
	})
	second, web = settled("the new releases serving")
	if second["store"].ID == first["store"].ID {
		t.Fatal("the store kept its release")
	}
	if got := testenv.HTTPGet(web + "/kv/color"); got != "blue" {
		t.Fatalf("after a new release of the store: %q", got)
	}
	newRelease := time.Since(rolled)

	// The host daemon restarts: the store keeps its data.
	h.restart()
	testenv.Eventually(t, 2*time.Minute, "the value read after the host daemon restarted", func() bool {
		for _, addr := range c.passing("counter-web") {
			return testenv.HTTPGet("http://"+addr+"/kv/color") == "blue"
		}
		return false
	})
	testenv.Report(t, "counter-example", "examples/formations/counter end to end (2 buildpack builds, release phase, volume):\n"+
		"  first deploy to serving: "+deployed.Round(time.Second).String()+"\n"+
		"  new release of both (store replaced with its volume, migration again): "+newRelease.Round(time.Second).String())
}
