package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A preview that works: it gets its base formation's config vars, the file's preview
// overrides over them, and its own config vars (env set FORMATION-pr-N) over both; a change
// of the base's releases it again; its first build starts from the base's build cache.
func TestPreviewConfigAndWarmBuild(t *testing.T) {
	parallel(t, 60*time.Second)
	began := time.Now()
	c := newCluster(t)
	c.host("h")
	f := uniqueID("pvc") // buildpack caches are named by formation
	example := helloAs(t, f)
	yml, err := os.ReadFile(filepath.Join(example, "gilliam.yml"))
	if err != nil {
		t.Fatal(err)
	}
	withPreviews := strings.Replace(string(yml), "scale: 2", "scale: 1", 1) +
		"previews:\n  enabled: true\n  ttl: 1h\n  services:\n    web: {env: {SHARED: from-the-preview-override}}\n"
	writeFile(t, filepath.Join(example, "gilliam.yml"), withPreviews)

	c.repo.CommitDir(example, "", "hello with previews")
	config := filepath.Join(t.TempDir(), "gilliam-sync.yml")
	writeFile(t, config, fmt.Sprintf(`data: %s
registry: %s
builder: %s
interval: 1s
leader: {id: pv, lock_ttl: 10s, lock_delay: 1s}
repos:
  - url: %s
    forge: github
    poll_interval: 1s
    previews: {pull_requests: true, forks: true}
`, t.TempDir(), c.reg.Addr, testenv.Builder(t), c.repo.URL))
	s := testenv.Start(t, c.consul.Env(), c.bin, "sync", "--config", config, "--log-format", "json")
	// Config vars are sealed with the installation's root key, which the leader publishes.
	testenv.Eventually(t, time.Minute, "the base's config vars set", func() bool {
		cmd := exec.Command(c.bin, "env", "set", f, "DATABASE_URL=postgres://base", "SHARED=from-the-base", "ONLY_BASE=yes")
		cmd.Env = append(cmd.Environ(), c.consul.Env()...)
		return cmd.Run() == nil
	})
	testenv.Eventually(t, 6*time.Minute, "the base serving", func() bool { return c.countStarting(f+"-web", "Hello, world") == 1 })

	// A pull request that changes the code: its preview builds, from the base's cache.
	main, err := os.ReadFile(filepath.Join(example, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(main), `"%s from %s\n"`, `"%s (pr) from %s\n"`, 1)
	if changed == string(main) {
		t.Fatal("the example's response format moved; update this test")
	}
	head := c.repo.CommitOn("pr-1", map[string]string{"main.go": changed}, "a pull request")
	c.repo.PushRef("refs/pull/1/head", head)
	preview := f + "-pr-1"
	testenv.Eventually(t, 6*time.Minute, "the preview serving", func() bool { return c.countStarting(preview+"-web", "Hello, world (pr)") == 1 })

	// What the preview's processes see, in a one-off of its current release (through the
	// buildpack's launcher): config vars are sealed to hosts, not in the release.
	settled := func(formation string) string {
		t.Helper()
		var latest string
		testenv.Eventually(t, 2*time.Minute, formation+"'s roll-out settled", func() bool {
			ds := c.desired(formation, "web")
			latest = ds.Latest
			return ds.Rollout == nil && len(ds.Deployments) == 1 && ds.Deployments[0].Release == ds.Latest
		})
		return latest
	}
	seen := func(formation string) string {
		t.Helper()
		stdout, stderr, code := c.runOneOff(t.Context(), "", formation, "web", "--", "sh", "-c", "echo $DATABASE_URL $SHARED $ONLY_BASE $GREETING")
		if code != 0 {
			t.Fatalf("run in %s: exit %d, stdout %q, stderr %q", formation, code, stdout, stderr)
		}
		return strings.TrimSpace(stdout)
	}
	first := settled(preview)
	if got := seen(preview); got != "postgres://base from-the-preview-override yes Hello, world" {
		t.Fatalf("the preview sees %q; want the base's config vars under the file's preview override", got)
	}
	if st := c.cli("status", preview); strings.Contains(st, "crash") || strings.Contains(st, "error") {
		t.Fatalf("the preview's status:\n%s", st)
	}

	// Its own config var wins; the base's changing releases it again.
	c.cli("env", "set", preview, "DATABASE_URL=postgres://pr-1")
	testenv.Eventually(t, 2*time.Minute, "the preview's own config var released", func() bool {
		return c.desired(preview, "web").Latest != first
	})
	second := settled(preview)
	if got := seen(preview); got != "postgres://pr-1 from-the-preview-override yes Hello, world" {
		t.Fatalf("the preview sees %q after env set %s", got, preview)
	}
	c.cli("env", "set", f, "ONLY_BASE=changed")
	testenv.Eventually(t, 2*time.Minute, "the base's config change released to the preview", func() bool {
		return c.desired(preview, "web").Latest != second
	})
	settled(preview)
	if got := seen(preview); got != "postgres://pr-1 from-the-preview-override changed Hello, world" {
		t.Fatalf("the preview sees %q after the base's config changed", got)
	}
	settled(f)
	if got := seen(f); got != "postgres://base from-the-base changed Hello, world" {
		t.Fatalf("the base sees %q", got)
	}

	// Build times, from the daemon's log: the base's first build was cold, the preview's
	// first starts from a copy of its cache.
	took := func(formation string) string {
		for _, l := range s.Logs("built", "formation="+formation) {
			if ns, ok := l.Attrs["took"].(float64); ok {
				return time.Duration(ns).Round(100 * time.Millisecond).String()
			}
		}
		return "(not in the log)"
	}
	copied := "(not in the log)"
	for _, l := range s.Logs("build", "formation="+preview) {
		if line := fmt.Sprint(l.Attrs["line"]); strings.Contains(line, "copied from") {
			copied = line[strings.LastIndex(line, " ")+1:]
		}
	}
	if len(s.Logs("built", "formation="+preview)) == 0 {
		t.Fatal("the preview was not built")
	}
	testenv.Report(t, "e2e-preview-warm-build", fmt.Sprintf(
		"first build of the hello formation (buildpacks): base %s (cold), its pull request's preview %s (one-line change, from a copy of the base's cache made in %s); the whole test %s",
		took(f), took(preview), copied, time.Since(began).Round(time.Second)))
}
