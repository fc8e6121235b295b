package sync

import (
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// What the forge is told follows the state: pending while the images are resolved and the
// roll-out runs, success with the router's URL once every instance passes, on the commit
// the formation was deployed from; failure with file:line for an invalid gilliam.yml.
func TestNotifyFollowsTheState(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	ls := []router.Listener{{Scheme: "https", Domain: "apps.example.com", Port: 443}}
	status := func() forge.Status {
		t.Helper()
		ss := Notify(w, m, ls)["repo"].Statuses
		if len(ss) != 1 {
			t.Fatalf("statuses %+v", ss)
		}
		return ss[0]
	}
	if n := Notify(w, m, ls)["repo"]; len(n.Statuses) != 0 || n.Silent[w.Repos[0].Targets[0].Key()] != "not handled yet, not building" {
		t.Fatalf("a status before anything started, or no word on why not: %+v", n)
	}
	// The images are being resolved: pending.
	m.InFlight[w.Repos[0].Targets[0].ID()] = "c1"
	if s := status(); s.State != forge.Pending || s.Commit != "c1" || s.Context != "gilliam/shop" || s.Description != "building" {
		t.Fatalf("got %+v", s)
	}
	delete(m.InFlight, w.Repos[0].Targets[0].ID())
	// Deployed, instances not passing yet: pending; then success with the URL.
	for i := 0; i < 3; i++ {
		applyAll(t, w, &m, Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions)
	}
	if s := status(); s.State != forge.Pending || !strings.HasPrefix(s.Description, "rolling out") {
		t.Fatalf("got %+v", s)
	}
	rel := w.KV.Desired["shop"].Services["web"].Latest
	for i := 0; i < 2; i++ {
		w.PassingSince[state.InstanceID("shop", "web", rel, i)] = t0
	}
	if s := status(); s.State != forge.Success || s.Commit != "c1" || s.TargetURL != "https://shop.apps.example.com/" {
		t.Fatalf("got %+v", s)
	}
	// Had its roll-out been reverted: failure, with the history's words.
	d := copyDesired(w.KV.Desired["shop"])
	ds := d.Services["web"]
	ds.Failed = ds.Latest
	d.Services["web"] = ds
	saved := w.KV.Desired["shop"]
	w.KV.Desired["shop"] = d
	w.KV.History["shop"] = []state.Event{{Service: "web", What: "roll-out of release 8c1d2e3f4a5b failed: 0 of 2 healthy after 5m0s; reverted to nothing"}}
	if s := status(); s.State != forge.Failure || s.Commit != "c1" || s.Description != "roll-out reverted: web: roll-out of release 8c1d2e3f4a5b failed: 0 of 2 healthy after 5m0s; reverted to nothing" {
		t.Fatalf("got %+v", s)
	}
	w.KV.Desired["shop"] = saved

	// An invalid gilliam.yml at c2: failure on c2, with file:line; c1 keeps running.
	w2 := world(t, "c2", web+"    colour: blue\n")
	w2.KV, w2.PassingSince = w.KV, w.PassingSince
	w = w2
	applyAll(t, w, &m, Reconcile(Input{World: w, Memory: m, Policy: policy()}).Actions)
	if s := status(); s.State != forge.Failure || s.Commit != "c2" || !strings.HasPrefix(s.Description, "gilliam.yml:7:5: services.web") {
		t.Fatalf("got %+v", s)
	}
}

func TestDescribe(t *testing.T) {
	build := (&build.FailedError{Formation: "shop", Service: "web", Commit: "0123456789abcdef", Reason: "exit status 1", Log: "/l",
		Tail: "go: compiling\n./main.go:3:1: syntax error: non-declaration statement outside function body\n"}).Error()
	for _, c := range []struct{ err, want string }{
		{"commit 0123456789ab: invalid gilliam.yml:\ngilliam.yml:3:5: services.web.port: unknown key\ngilliam.yml:9:1: x: bad", "gilliam.yml:3:5: services.web.port: unknown key (and 1 more)"},
		{"service web: " + build, "build failed: exit status 1: ./main.go:3:1: syntax error: non-declaration statement outside function body"},
		{"registry down\nmore", "registry down"},
	} {
		if got := describe(c.err); got != c.want {
			t.Errorf("describe(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestPRNumber(t *testing.T) {
	for ref, want := range map[string]int{"refs/pull/7/head": 7, "refs/merge-requests/12/head": 12, "refs/heads/main": 0, "refs/pull/x/head": 0, "refs/pull/7/merge": 0} {
		if got := PRNumber(ref); got != want {
			t.Errorf("PRNumber(%s) = %d, want %d", ref, got, want)
		}
	}
}

// An error quoting a pull request's own text is shown as code in the comment: its markdown,
// links and mentions are not rendered.
func TestCodeSpan(t *testing.T) {
	got := codeSpan("gilliam.yml:3:1: @admin `x` [click](http://evil.example): unknown field")
	if got != "`` gilliam.yml:3:1: @admin 'x' [click](http://evil.example): unknown field ``" {
		t.Fatalf("got %s", got)
	}
}

// Another installation posts under its own name: two installations watching one repository
// never overwrite each other's statuses or comments.
func TestNotifyScopesInstallations(t *testing.T) {
	w, m := world(t, "c1", web), memory()
	m.InFlight[w.Repos[0].Targets[0].ID()] = "c1"
	n := &notifier{scope: "teams-a/", repos: map[string]notifyRepo{"repo": {url: "https://git.example/shop", cfg: &gitwatch.Notify{}}},
		routers: func() []router.Listener { return nil }}
	wants := n.wants(notifyInput{world: w, memory: m})
	if len(wants) != 1 || len(wants[0].Statuses) != 1 || wants[0].Statuses[0].Context != "gilliam/teams-a/shop" {
		t.Fatalf("wants %+v", wants)
	}
}
