package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Table tests of Reconcile's rules: data in, actions out, no Consul, no Docker.

const web = `formation: shop
services:
  web:
    image: registry.example/shop/web:1
    ports: [8080]
    scale: 2
`

func policy() Policy {
	return Config{}.Policy()
}

// world is a world with one repository whose main branch is at commit, holding file.
func world(t *testing.T, commit, file string) *World {
	t.Helper()
	w := &World{KV: state.NewStore(nil, "").EmptySnapshot(), Now: t0,
		PassingSince: map[string]time.Time{}, HostFailingSince: map[string]time.Time{}, NodeDown: map[string]bool{}, Registrations: map[string]state.InstanceCheck{}}
	src := &Source{Trees: map[string]string{}}
	if f, err := schema.Parse("gilliam.yml", []byte(file)); err != nil {
		src.Err = fault.Stall(err)
	} else {
		src.Formation = f
	}
	w.Repos = []RepoView{{Key: "repo", URL: "https://git.example/shop", Listed: true, Refs: map[string]string{"refs/heads/main": commit},
		Targets: []Target{{Repo: "repo", RepoURL: "https://git.example/shop", Ref: "refs/heads/main", File: "gilliam.yml", Commit: commit, Kind: gitwatch.RefDeployed, Source: src}}}}
	for i := 1; i <= 3; i++ {
		w.Hosts = append(w.Hosts, state.Host{ID: fmt.Sprintf("h%d", i), Passing: true, Capacity: state.Resources{CPU: 4000, Memory: 8 << 30}})
	}
	return w
}

func memory() Memory {
	return Memory{InFlight: map[string]string{}, Images: map[string]ImagesOutcome{}, Retries: map[string]RetryState{}, Deregistered: map[string]time.Time{}}
}

func kinds(actions []Action) string {
	var out []string
	for _, a := range actions {
		out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", a), "sync."))
	}
	return strings.Join(out, " ")
}

// applyAll applies what Reconcile decided to the world the way Consul would, so a test
// can go on to the next decision: the plan's executor does exactly that.
func applyAll(t *testing.T, w *World, m *Memory, actions []Action) {
	t.Helper()
	dry := &dryRun{world: w, mem: *m, res: &PlanResult{}, lookup: lookupAll{}}
	for _, a := range actions {
		if _, err := dry.apply(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	*m = dry.mem
}

type lookupAll struct{}

func (lookupAll) Lookup(_ context.Context, req build.Request) (string, bool, error) {
	return "registry.example/" + req.Formation + "/" + req.Service + "@sha256:" + strings.Repeat("a", 64), true, nil
}

func TestReconcileNewCommitResolvesImagesThenDeploys(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "ResolveImages" {
		t.Fatalf("first decision: %s", got)
	}
	// Still in flight: nothing new.
	m.InFlight["repo refs/heads/main gilliam.yml"] = "c1"
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("while in flight: %s", kinds(d.Actions))
	}
	delete(m.InFlight, "repo refs/heads/main gilliam.yml")
	m.Images["repo refs/heads/main gilliam.yml"] = ImagesOutcome{Commit: "c1", Images: map[string]string{"web": "r/shop/web@sha256:1"}}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Deploy" {
		t.Fatalf("with images: %s", got)
	}
	dep := d.Actions[0].(Deploy)
	if len(dep.Releases) != 1 || dep.Releases[0].Image != "r/shop/web@sha256:1" || dep.Desired.Services["web"].Latest != dep.Releases[0].ID {
		t.Fatalf("deploy: %+v", dep)
	}
	if dep.Observed.Targets["refs/heads/main gilliam.yml"].Commit != "c1" || dep.Status.Deployed != "c1" {
		t.Fatalf("deploy records: %+v %+v", dep.Observed, dep.Status)
	}
}

func TestReconcileFullCycleSettlesAndThenIdles(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	for i := 0; i < 10; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		if len(d.Actions) == 0 {
			if n := len(w.KV.Desired["shop"].Instances()); n != 2 {
				t.Fatalf("settled with %d instances", n)
			}
			placed := 0
			for _, a := range w.KV.Assignments {
				placed += len(a.Instances)
			}
			if placed != 2 {
				t.Fatalf("settled with %d placed", placed)
			}
			return
		}
		applyAll(t, w, &m, d.Actions)
	}
	t.Fatal("did not settle in 10 decisions")
}

func TestReconcileInvalidFileStallsOnce(t *testing.T) {
	w, m := world(t, "c1", "formation: shop\nservices:\n  web:\n    scael: 2\n"), memory()
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	rec, ok := d.Actions[0].(Record)
	if len(d.Actions) != 1 || !ok || !rec.Stalled || rec.Status == nil || !strings.Contains(rec.Status.Error, "gilliam.yml:") {
		t.Fatalf("decision: %s %+v", kinds(d.Actions), d.Actions)
	}
	if rec.Observed.Targets["refs/heads/main gilliam.yml"].Commit != "c1" {
		t.Fatal("the stalled commit is not recorded as handled: it would be tried again")
	}
	applyAll(t, w, &m, d.Actions)
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("the same stalled commit decided again: %s", kinds(d.Actions))
	}
}

func TestReconcileRetryableFailureBacksOff(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	id := "repo refs/heads/main gilliam.yml"
	m.Images[id] = ImagesOutcome{Commit: "c1", Err: errors.New("dial tcp 127.0.0.1:5000: connection refused")}
	attempts := 0
	for round := 1; round <= 4; round++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		r, ok := d.Actions[0].(Retry)
		if len(d.Actions) != 1 || !ok || r.Attempt != round {
			t.Fatalf("round %d: %s %+v", round, kinds(d.Actions), d.Actions)
		}
		if (r.Status != nil) != (round == 1) {
			t.Fatalf("round %d: status written %v (only when failing starts)", round, r.Status != nil)
		}
		m.Retries[id] = RetryState{Commit: "c1", Attempts: r.Attempt, At: r.At}
		// Before its time: nothing, and a wake-up at it.
		if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 || !d.Wake.Equal(r.At) {
			t.Fatalf("round %d: before the retry time: %s, wake %s", round, kinds(d.Actions), d.Wake)
		}
		// At its time: resolve again.
		w.Now = r.At
		d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
		if got := kinds(d.Actions); got != "ResolveImages" {
			t.Fatalf("round %d: at the retry time: %s", round, got)
		}
		attempts++
		m.Images[id] = ImagesOutcome{Commit: "c1", Err: errors.New("connection refused"), Attempt: r.Attempt}
	}
	if gap := policy().Retry.After(id, 4, t0).Sub(t0); gap < 16*time.Second {
		t.Fatalf("the fourth gap is %s: not backing off", gap)
	}
}

func TestReconcileSupersededDoesNothing(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	m.Images["repo refs/heads/main gilliam.yml"] = ImagesOutcome{Commit: "c1", Err: fmt.Errorf("service web: %w", build.ErrSuperseded)}
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("superseded: %s", kinds(d.Actions))
	}
}

func TestReconcileReservedAndCollidingNames(t *testing.T) {
	w, m := world(t, "c1", "formation: gilliam\nservices:\n  host:\n    image: x/y:1\n"), memory()
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if rec, ok := d.Actions[0].(Record); !ok || !strings.Contains(rec.Why, "platform's own") {
		t.Fatalf("a formation named gilliam: %s %+v", kinds(d.Actions), d.Actions)
	}
	w, m = world(t, "c1", "formation: a\nservices:\n  b-c:\n    image: x/y:1\n"), memory()
	w.KV.Desired["a-b"] = &state.Desired{Formation: "a-b", Services: map[string]state.DesiredService{"c": {}}}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if rec, ok := d.Actions[0].(Record); !ok || !strings.Contains(rec.Why, "a-b/c") {
		t.Fatalf("a + b-c beside a-b + c: %s %+v", kinds(d.Actions), d.Actions)
	}
}

func TestReconcileConfigChangeReleasesAgain(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	for i := 0; i < 10; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		if len(d.Actions) == 0 {
			break
		}
		applyAll(t, w, &m, d.Actions)
	}
	before := w.KV.Desired["shop"].Services["web"].Latest
	w.Config = map[string]map[string]string{"shop": {"SECRET": "s"}} // as the observer opened it
	w.ReleaseIDKey = []byte("release-id key")
	w.KV.Desired["shop"].ConfigIndex = 99 // the config's index (0 here) differs
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Deploy" { // the images of c1 are known: no resolution
		t.Fatalf("config change: %s", got)
	}
	dep := d.Actions[0].(Deploy)
	rel := dep.Releases[0]
	if dep.Cause != "config" || dep.Desired.Services["web"].Latest == before {
		t.Fatalf("config release: %+v", dep)
	}
	// The release names the var and holds a keyed digest of it, never its value; the value
	// goes to the executor, to be sealed.
	if _, inEnv := rel.Env["SECRET"]; inEnv || !slices.Equal(rel.Config, []string{"SECRET"}) || rel.ConfigDigest == "" || dep.Secrets[rel.ID]["SECRET"] != "s" {
		t.Fatalf("config release: env %v config %v digest %q secrets %v", rel.Env, rel.Config, rel.ConfigDigest, dep.Secrets)
	}
	if b, _ := json.Marshal(rel); strings.Contains(string(b), `"s"`) || strings.Contains(dep.String(), "SECRET=s") {
		t.Fatalf("the value is in the release or the action's words: %s", b)
	}
	// Another key gives another digest for the same value: an ID tells nothing of it.
	w.ReleaseIDKey = []byte("another key")
	d2 := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if other := d2.Actions[0].(Deploy).Releases[0]; other.ConfigDigest == rel.ConfigDigest || other.ID == rel.ID {
		t.Fatal("the release ID does not depend on the key")
	}

	// A config var that does not open stalls the deploy and says which.
	w.Config, w.ConfigErr = nil, map[string]error{"shop": fault.Stall(errors.New("config var SECRET of formation shop: does not open"))}
	d3 := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d3.Actions); got != "Record" || !strings.Contains(d3.Actions[0].(Record).Why, "SECRET") {
		t.Fatalf("unopenable config: %s %+v", got, d3.Actions)
	}
}

func TestReconcilePreviews(t *testing.T) {
	const file = web + "previews:\n  enabled: true\n  ttl: 1h\n"
	w, m := world(t, "c1", file), memory()
	pr := w.Repos[0].Targets[0]
	pr.Ref, pr.Kind, pr.PR, pr.Commit = "refs/pull/7/head", gitwatch.RefPullRequest, 7, "p1"
	w.Repos[0].Targets = append(w.Repos[0].Targets, pr)
	w.Repos[0].Refs[pr.Ref] = "p1"
	m.Images[pr.ID()] = ImagesOutcome{Commit: "p1", Images: map[string]string{"web": "r@sha256:2"}}
	m.Images[w.Repos[0].Targets[0].ID()] = ImagesOutcome{Commit: "c1", Images: map[string]string{"web": "r@sha256:1"}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Deploy Deploy" {
		t.Fatalf("main and PR: %s", got)
	}
	applyAll(t, w, &m, d.Actions)
	if w.KV.Desired["shop-pr-7"] == nil || w.KV.Status["shop-pr-7"].Preview.PR != 7 {
		t.Fatal("no preview formation shop-pr-7")
	}
	// The cap: a second PR gets none while the first lives.
	p := Policy(policy())
	p.MaxPreviews = 1
	pr8 := pr
	pr8.Ref, pr8.PR, pr8.Commit = "refs/pull/8/head", 8, "p8"
	w.Repos[0].Targets = append(w.Repos[0].Targets, pr8)
	d = Reconcile(Input{World: w, Memory: m, Policy: p})
	for _, a := range d.Actions {
		if r, ok := a.(ResolveImages); ok && r.Target.PR == 8 {
			t.Fatal("a preview beyond the cap was started")
		}
	}
	// The ref goes, on the word of a listing: torn down. Without a listing: kept.
	w.Repos[0].Targets = w.Repos[0].Targets[:1]
	delete(w.Repos[0].Refs, "refs/pull/7/head")
	w.Repos[0].Listed = false
	for _, a := range Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions {
		if _, ok := a.(Teardown); ok {
			t.Fatal("torn down without a successful listing")
		}
	}
	w.Repos[0].Listed = true
	found := false
	for _, a := range Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions {
		if td, ok := a.(Teardown); ok && td.Desired.Formation == "shop-pr-7" {
			found = true
		}
	}
	if !found {
		t.Fatal("the preview of a closed PR is not torn down")
	}
}

func TestReconcilePreviewTTL(t *testing.T) {
	const file = web + "previews:\n  enabled: true\n  ttl: 1h\n"
	w, m := world(t, "p1", file), memory()
	w.Repos[0].Targets[0].Ref, w.Repos[0].Targets[0].Kind, w.Repos[0].Targets[0].PR = "refs/pull/3/head", gitwatch.RefPullRequest, 3
	w.Repos[0].Refs = map[string]string{"refs/pull/3/head": "p1"}
	w.KV.Observed["repo"] = &state.Observed{Repo: "repo", Targets: map[string]state.ObservedTarget{
		"refs/pull/3/head gilliam.yml": {Ref: "refs/pull/3/head", File: "gilliam.yml", Commit: "p1", Formation: "shop-pr-3", Preview: true}}}
	w.KV.Desired["shop-pr-3"] = &state.Desired{Formation: "shop-pr-3", Services: map[string]state.DesiredService{}}
	w.KV.Status["shop-pr-3"] = &state.FormationStatus{Formation: "shop-pr-3", Preview: &state.Preview{PR: 3, TTL: time.Hour, Updated: t0}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if len(d.Actions) != 0 || !d.Wake.Equal(t0.Add(time.Hour)) {
		t.Fatalf("within its ttl: %s, wake %s", kinds(d.Actions), d.Wake)
	}
	w.Now = t0.Add(2 * time.Hour)
	if got := kinds(Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions); got != "Teardown" {
		t.Fatalf("past its ttl: %s", got)
	}
}

func TestReconcileRolloutFollowsHealth(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "old", Scale: 2}}, Latest: "new", FileScale: 2, Strategy: state.Strategy{MaxParallel: 1}}}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	adv, ok := d.Actions[0].(Advance)
	if !ok || adv.Desired.Services["web"].Rollout == nil || len(adv.Events) != 1 || len(adv.History) != 1 {
		t.Fatalf("start: %s %+v", kinds(d.Actions), d.Actions)
	}
	w.KV.Desired["shop"] = adv.Desired
	// Nothing passes: nothing changes.
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); kinds(d.Actions) == "Advance" {
		t.Fatal("advanced with no instance passing")
	}
	// The new instance passes: the next step.
	w.PassingSince[state.InstanceID("shop", "web", "new", 0)] = t0
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if kinds(d.Actions) != "Advance" {
		t.Fatalf("with one passing: %s", kinds(d.Actions))
	}
}

func TestReconcileIdleWorldDecidesNothing(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	for i := 0; i < 10; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		if len(d.Actions) == 0 {
			break
		}
		applyAll(t, w, &m, d.Actions)
	}
	for i := 0; i < 3; i++ {
		w.Now = w.Now.Add(time.Minute)
		if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
			t.Fatalf("idle pass %d: %s", i, kinds(d.Actions))
		}
	}
}

func TestReconcileDeadHostRegistrationsRemovedWhileListed(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.HostFailingSince["h3"] = t0.Add(-5 * time.Second)
	w.Registrations["a@h3"] = state.InstanceCheck{Instance: "a", Host: "h3", Node: "n3", Registration: "a@h3"}
	if got := kinds(Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions); strings.Contains(got, "DeregisterDead") {
		t.Fatal("deregistered before dead_after")
	}
	w.Now = t0.Add(10 * time.Second)
	var dead []DeregisterDead
	for _, a := range Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions {
		if dd, ok := a.(DeregisterDead); ok {
			dead = append(dead, dd)
		}
	}
	if len(dead) != 1 || dead[0].Host != "h3" {
		t.Fatalf("dead host: %+v", dead)
	}
	m.Deregistered["h3"] = w.Now
	if got := kinds(Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions); strings.Contains(got, "DeregisterDead") {
		t.Fatal("deregistered twice at once")
	}
	// Registrations of the dead host listed again (an agent's sync that raced the removal):
	// removed again, once RederegisterAfter has passed.
	w.Now = w.Now.Add(RederegisterAfter)
	if got := kinds(Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions); !strings.Contains(got, "DeregisterDead") {
		t.Fatal("registrations of a dead host listed again were left: " + got)
	}
	// Nothing listed any more: nothing to do.
	delete(w.Registrations, "a@h3")
	delete(w.HostFailingSince, "h3")
	if got := kinds(Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions); strings.Contains(got, "DeregisterDead") {
		t.Fatal("deregistered a host with nothing listed: " + got)
	}
}

func TestReconcileReleaseGC(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "r0", Scale: 0}}, Latest: "r0"}}}
	w.KV.Releases["shop"] = map[string]*state.Release{}
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("r%d", i)
		w.KV.Releases["shop"][id] = &state.Release{ID: id, Service: "web", Formation: "shop", Created: t0.Add(time.Duration(i) * time.Minute)}
	}
	p := policy()
	p.KeepReleases = 2
	var gc *CollectReleases
	for _, a := range Reconcile(Input{World: w, Memory: m, Policy: p}).Actions {
		if c, ok := a.(CollectReleases); ok {
			gc = &c
		}
	}
	if gc == nil || len(gc.Releases) != 2 { // r4 r3 kept as newest, r0 as running
		t.Fatalf("gc: %+v", gc)
	}
	for _, r := range gc.Releases {
		if r.ID == "r0" || r.ID == "r4" || r.ID == "r3" {
			t.Fatalf("gc deletes %s", r.ID)
		}
	}
}

// One formation that cannot be placed neither holds up the others nor makes a report
// too large for Consul.
func TestReconcileUnplaceableFormationIsolated(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.KV.Desired["big"] = &state.Desired{Formation: "big", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "huge", Scale: 6000}}, Latest: "huge", FileScale: 6000}}}
	w.KV.Releases["big"] = map[string]*state.Release{"huge": {ID: "huge", Resources: state.Resources{Memory: 1 << 40}}}
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "r1", Scale: 2}}, Latest: "r1", FileScale: 2}}}
	p := policy()
	p.Placement = placement.Options{DeadAfter: 10 * time.Second}
	var place *Place
	for _, a := range Reconcile(Input{World: w, Memory: m, Policy: p}).Actions {
		if pl, ok := a.(Place); ok {
			place = &pl
		}
	}
	if place == nil || len(place.Start) != 2 {
		t.Fatalf("the healthy formation was not placed: %+v", place)
	}
	if n := len(place.Report.Unplaced); n > maxReported+5 {
		t.Fatalf("the report lists %d entries", n)
	}
	last := place.Report.Unplaced[len(place.Report.Unplaced)-1]
	if last.Instance != "(5900 more)" || last.Formation != "big" {
		t.Fatalf("the summary: %+v", last)
	}
}

// A canary runs beside the target, outside its scale; promoted, it rolls out from its
// running instances; aborted, it goes.
func TestReconcileCanary(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	ds := state.DesiredService{Deployments: []state.Deployment{{Release: "old", Scale: 3}}, Latest: "old", FileScale: 3,
		Strategy: state.Strategy{MaxParallel: 1}, Canary: &state.Canary{Release: "can", Scale: 1}}
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": ds}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	adv, ok := d.Actions[0].(Advance)
	if !ok || fmt.Sprint(adv.Desired.Services["web"].Deployments) != "[{old 3} {can 1}]" || !strings.Contains(adv.Events[0].What, "canary") {
		t.Fatalf("canary: %s %+v", kinds(d.Actions), d.Actions)
	}
	w.KV.Desired["shop"] = adv.Desired
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); strings.Contains(kinds(d.Actions), "Advance") {
		t.Fatalf("a settled canary advanced again: %v", d.Actions)
	}
	// Promoted: the canary's release is the latest; the roll-out starts from its instance.
	promoted := adv.Desired.Services["web"]
	promoted.Latest, promoted.Canary = "can", nil
	w.KV.Desired["shop"].Services["web"] = promoted
	w.PassingSince[state.InstanceID("shop", "web", "can", 0)] = t0.Add(-time.Minute)
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	adv, ok = d.Actions[0].(Advance)
	if !ok || adv.Desired.Services["web"].Rollout == nil || fmt.Sprint(adv.Desired.Services["web"].Deployments) != "[{old 2} {can 2}]" {
		t.Fatalf("promoted: %s %+v", kinds(d.Actions), adv.Desired.Services["web"])
	}
}

// A formation name belongs to the first source that deploys it: another repository naming
// it is refused, in its own record, and the owner's status is untouched.
func TestReconcileFormationClaims(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	m.Images["repo refs/heads/main gilliam.yml"] = ImagesOutcome{Commit: "c1", Images: map[string]string{"web": "r@sha256:1"}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	dep, ok := d.Actions[0].(Deploy)
	if !ok || dep.Claim == nil || dep.Claim.Formation != "shop" || dep.Claim.Repo != "repo" {
		t.Fatalf("a first deploy claims its name: %+v", d.Actions)
	}
	w.KV.Claims["shop"] = &state.Claim{Formation: "shop", Repo: "other", URL: "https://git.example/other", File: "gilliam.yml"}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	rec, ok := d.Actions[0].(Record)
	if len(d.Actions) != 1 || !ok || !rec.Refused || rec.Status != nil || !strings.Contains(rec.Why, "belongs to https://git.example/other") {
		t.Fatalf("another source's formation: %s %+v", kinds(d.Actions), d.Actions)
	}
	applyAll(t, w, &m, d.Actions)
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("refused again: %s", kinds(d.Actions))
	}
}

func TestReconcileInstanceCap(t *testing.T) {
	w, m := world(t, "c1", strings.Replace(web, "scale: 2", "scale: 900", 1)), memory()
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	rec, ok := d.Actions[0].(Record)
	if !ok || !strings.Contains(rec.Why, "asks for 900 instances, over this installation's limit of 500") {
		t.Fatalf("over the cap: %s %+v", kinds(d.Actions), d.Actions)
	}
}

// An instance restarted again and again for a failing check on one host moves: its
// release avoids that host.
func TestReconcileUnhealthyInstanceMoves(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "r1", Scale: 1}}, Latest: "r1", FileScale: 1}}}
	id := state.InstanceID("shop", "web", "r1", 0)
	w.KV.Assignments["h1"] = &state.Assignment{Host: "h1", Instances: []state.Instance{{ID: id, Formation: "shop", Service: "web", Release: "r1"}}}
	w.KV.HostStatus["h1"] = &state.HostStatus{Host: "h1", Instances: []state.InstanceStatus{{ID: id, Release: "r1", UnhealthyRestarts: 2}}}
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("moved after 2 unhealthy restarts: %s", kinds(d.Actions))
	}
	w.KV.HostStatus["h1"].Instances[0].UnhealthyRestarts = 3
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	pl, ok := d.Actions[0].(Place)
	if !ok || len(pl.Stop) != 1 || len(pl.Start) != 1 || pl.Hosts[id] == "h1" {
		t.Fatalf("after 3 unhealthy restarts: %+v", d.Actions)
	}
}

// A deploy writes the routes the router needs (web service, domains); a domain another
// formation owns is refused with a clear error.
func TestReconcileRoutesAndDomains(t *testing.T) {
	file := "domains: [shop.example.com]\n" + web
	w, m := world(t, "c1", file), memory()
	m.Images["repo refs/heads/main gilliam.yml"] = ImagesOutcome{Commit: "c1", Images: map[string]string{"web": "r@sha256:1"}}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	dep, ok := d.Actions[0].(Deploy)
	if !ok || dep.Routes == nil || dep.Routes.Web != "web" || fmt.Sprint(dep.Routes.Domains) != "[shop.example.com]" {
		t.Fatalf("routes: %+v", d.Actions)
	}
	w.KV.Routes["other"] = &state.Routes{Formation: "other", Domains: []string{"shop.example.com"}}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if rec, ok := d.Actions[0].(Record); !ok || !strings.Contains(rec.Why, "domain shop.example.com is formation other's already") {
		t.Fatalf("a claimed domain: %+v", d.Actions)
	}
}

// A host whose Consul node gossip finds failed (power lost, cable cut) is dead at once:
// its instances are placed elsewhere without waiting for dead_after.
func TestReconcileNodeDownIsDeadAtOnce(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Repos = nil
	w.KV.Desired["shop"] = &state.Desired{Formation: "shop", Services: map[string]state.DesiredService{"web": {
		Deployments: []state.Deployment{{Release: "r1", Scale: 1}}, Latest: "r1", FileScale: 1}}}
	id := state.InstanceID("shop", "web", "r1", 0)
	w.KV.Assignments["h1"] = &state.Assignment{Host: "h1", Instances: []state.Instance{{ID: id, Formation: "shop", Service: "web", Release: "r1"}}}
	w.Hosts[0].Passing = false
	w.HostFailingSince["h1"] = t0
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("a failing host moved before dead_after: %s", kinds(d.Actions))
	}
	w.NodeDown["h1"] = true
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	pl, ok := d.Actions[0].(Place)
	if !ok || len(pl.Start) != 1 || pl.Hosts[id] == "h1" {
		t.Fatalf("node down: %+v", d.Actions)
	}
}

// The watch list's policy decides previews: a pull request it refuses (from a fork, say)
// gets nothing, whatever its gilliam.yml says.
func TestReconcileDeniedPreview(t *testing.T) {
	const file = web + "previews:\n  enabled: true\n"
	w, m := world(t, "p1", file), memory()
	tg := &w.Repos[0].Targets[0]
	tg.Ref, tg.Kind, tg.PR, tg.Denied = "refs/pull/9/head", gitwatch.RefPullRequest, 9, "a pull request from a fork, and forks get no previews"
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Notice" {
		t.Fatalf("a denied preview: %s", got)
	}
}

// A release with config vars is sealed to every host it is placed on, in the transaction
// that places it; a host whose key changes gets a new copy; a host that no longer runs the
// release loses its copy; a host that published no key gets none.
func TestReconcileSealsConfigToTheHostsThatRunIt(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	w.Config = map[string]map[string]string{"shop": {"SECRET": "s"}}
	w.ReleaseIDKey = []byte("k")
	for _, h := range []string{"h1", "h2"} { // h3 published no key
		w.KV.HostKeys[h] = &state.HostKey{Public: "pub-" + h, Fingerprint: "fp-" + h}
	}
	var place *Place
	for i := 0; i < 10 && place == nil; i++ {
		d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
		for _, a := range d.Actions {
			if p, ok := a.(Place); ok && len(p.Assignments) > 0 {
				place = &p
			}
		}
		applyAll(t, w, &m, d.Actions)
	}
	if place == nil {
		t.Fatal("never placed")
	}
	rel := w.KV.Desired["shop"].Services["web"].Latest
	hosts := map[string]bool{}
	for _, as := range place.Assignments {
		if len(as.Instances) > 0 && as.Host != "h3" {
			hosts[as.Host] = true
		}
	}
	for _, s := range place.Seals {
		if s.Release != rel || s.Secret == "" || s.To != "pub-"+s.Host || !hosts[s.Host] {
			t.Fatalf("seal %+v (hosts placed on with a key: %v)", s, hosts)
		}
		delete(hosts, s.Host)
	}
	if len(hosts) > 0 {
		t.Fatalf("hosts placed on without their sealed copy: %v", hosts)
	}
	applyTimeline(t, w, &m) // the instances the dry run placed pass: the deploy timeline says so
	if d := Reconcile(Input{World: w, Memory: m, Policy: policy()}); len(d.Actions) != 0 {
		t.Fatalf("settled, still: %s", kinds(d.Actions))
	}

	// A host's key changes: its copy is sealed again, to the new key.
	runner := ""
	for _, h := range []string{"h1", "h2"} {
		for _, inst := range instancesOf(w.KV.Assignments[h]) {
			if inst.Release == rel && runner == "" {
				runner = h
			}
		}
	}
	if runner == "" {
		t.Fatal("no host with a key runs the release")
	}
	w.KV.HostKeys[runner] = &state.HostKey{Public: "pub-new", Fingerprint: "fp-new"}
	d := Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Seal" || len(d.Actions[0].(Seal).Put) != 1 || d.Actions[0].(Seal).Put[0].To != "pub-new" {
		t.Fatalf("after %s's key changed: %s %+v", runner, got, d.Actions)
	}
	applyAll(t, w, &m, d.Actions)

	// A copy on a host that does not run the release goes.
	w.KV.Sealed["h3"] = map[string]*state.SealedEnv{"gone": {Release: "gone"}}
	d = Reconcile(Input{World: w, Memory: m, Policy: policy()})
	if got := kinds(d.Actions); got != "Seal" || len(d.Actions[0].(Seal).Drop) != 1 || d.Actions[0].(Seal).Drop[0].Release != "gone" {
		t.Fatalf("stale copy: %s %+v", got, d.Actions)
	}
}

func instancesOf(a *state.Assignment) []state.Instance {
	if a == nil {
		return nil
	}
	return a.Instances
}
