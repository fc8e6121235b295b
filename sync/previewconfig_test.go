package sync

import (
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/schema"
)

// A preview's env, weakest first: the file's env, the base formation's config vars, the
// file's preview override, the preview's own config vars; and its first build asks for the
// base's cache.
func TestReconcilePreviewGetsBaseConfig(t *testing.T) {
	const file = `formation: shop
services:
  web:
    image: registry.example/shop/web:1
    ports: [8080]
    env: {GREETING: hi, SHARED: file}
previews:
  enabled: true
  ttl: 1h
  services:
    web: {env: {OVERRIDDEN: preview-file}}
`
	w, m := world(t, "c1", file), memory()
	pr := w.Repos[0].Targets[0]
	pr.Ref, pr.Kind, pr.PR, pr.Commit = "refs/pull/7/head", gitwatch.RefPullRequest, 7, "p1"
	w.Repos[0].Targets = []Target{pr}
	w.Repos[0].Refs = map[string]string{pr.Ref: "p1"}
	w.Config = map[string]map[string]string{ // as the observer opened them
		"shop":      {"DATABASE_URL": "postgres://base", "SHARED": "base", "OVERRIDDEN": "base", "OWN": "base"},
		"shop-pr-7": {"OWN": "preview"},
	}

	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	ri, ok := d.Actions[0].(ResolveImages)
	if !ok || len(ri.Requests) != 1 || ri.Requests[0].CacheFrom != "shop" || ri.Requests[0].Formation != "shop-pr-7" {
		t.Fatalf("the preview's build request: %+v", d.Actions)
	}
	m.Images[pr.ID()] = ImagesOutcome{Commit: "p1", Images: map[string]string{"web": "r@sha256:2"}}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	dep, ok := d.Actions[0].(Deploy)
	if !ok || len(dep.Releases) != 1 {
		t.Fatalf("deploy: %s", kinds(d.Actions))
	}
	want := map[string]string{"GREETING": "hi", "SHARED": "base", "DATABASE_URL": "postgres://base", "OVERRIDDEN": "preview-file", "OWN": "preview"}
	// Config vars are sealed, not in the release's env: its env and its secrets together
	// are what the container gets.
	got := map[string]string{}
	for k, v := range dep.Releases[0].Env {
		got[k] = v
	}
	for k, v := range dep.Secrets[dep.Releases[0].ID] {
		got[k] = v
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("env %v, want %v", got, want)
	}
	applyAll(t, w, &m, d.Actions)

	// A change of the base's config vars releases the preview again (its index moves).
	if configChanged(w.KV, "shop-pr-7") {
		t.Fatal("config changed right after the deploy")
	}
	w.KV.Desired["shop-pr-7"].ConfigIndex = 12345 // as if either config key had moved
	if !configChanged(w.KV, "shop-pr-7") {
		t.Fatal("a moved config index is not a change")
	}
}

func TestServiceConfigOfNoPreviewIsItsOwn(t *testing.T) {
	config := map[string]map[string]string{"shop": {"A": "1"}}
	if got := serviceConfig(config, "shop", "", schema.PreviewOverride{}); len(got) != 1 || got["A"] != "1" {
		t.Fatalf("%v", got)
	}
	if got := serviceConfig(config, "shop-pr-1", "shop", schema.PreviewOverride{}); got["A"] != "1" {
		t.Fatalf("a preview with no config of its own: %v", got)
	}
}
