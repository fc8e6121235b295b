package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The walking skeleton, end to end: a git push becomes serving instances registered in
// Consul; a change replaces them; an invalid gilliam.yml is reported and changes nothing.
func TestPushToServing(t *testing.T) {
	parallel(t, 54*time.Second)
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	docker := testenv.NewDocker(t)
	git := testenv.NewGitServer(t)
	repo := git.NewRepo(t, "hello")
	bin := testenv.Binary(t)
	hostID := uniqueID("e2e")
	// Registered before the daemons start, so they run after they stopped.
	t.Cleanup(func() { docker.RemoveContainers(t, hostd.LabelHost, hostID) })
	t.Cleanup(func() { removeBuildCaches(t, docker, reg.Addr) })
	store := state.NewStore(consul.Client, "")
	ctx := context.Background()

	// 1. The hello formation, pushed to a repository on the git server, and the sync and
	// host parts running against the harness's Consul and registry.
	example := filepath.Join(testenv.RepoRoot(t), "examples", "formations", "hello")
	pushed := time.Now()
	commit1 := repo.CommitDir(example, "", "hello")
	up := testenv.Start(t, consul.Env(), bin, "up", "--repo", repo.URL, "--registry", reg.Addr,
		"--data", t.TempDir(), "--host-id", hostID, "--poll", "1s", "--log-format", "json",
		"--builder", testenv.Builder(t))

	// 2. Built, released, placed, started, registered, healthy, serving this commit's code.
	first := waitServing(t, consul, up, "Hello, world from ")
	healthy := time.Now()
	rel := onlyRelease(t, store, "hello")
	if rel.Commit != commit1 || !strings.HasPrefix(rel.Image, reg.Addr+"/hello/web@sha256:") {
		t.Fatalf("release %s names commit %s and image %s; want commit %s and an image in %s by digest", rel.ID, rel.Commit, rel.Image, commit1, reg.Addr)
	}
	if n := len(running(t, docker, hostID)); n != 2 {
		t.Fatalf("%d containers run, want 2", n)
	}
	testenv.Report(t, "e2e-push-to-serving", timings(up, commit1, pushed, healthy))

	// 3. A change to the response: a new release, new containers serving the new body, the
	// old ones gone from Docker and from Consul.
	main, err := os.ReadFile(filepath.Join(example, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(main), `"%s from %s\n"`, `"%s (v2) from %s\n"`, 1)
	if changed == string(main) {
		t.Fatal("the example's response format moved; update this test")
	}

	// First a dry run of the change, pushed to a branch that does not deploy: plan says
	// it would build and roll out, and changes nothing.
	plan := func(ref string) string {
		t.Helper()
		out, err := exec.Command(bin, "plan", "--repo", repo.URL, "--ref", ref, "--registry", reg.Addr,
			"--consul", consul.Addr, "--builder", testenv.Builder(t)).CombinedOutput()
		if err != nil {
			t.Fatalf("plan: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := plan("main"); !strings.Contains(out, "web: unchanged") {
		t.Fatalf("plan of the deployed commit:\n%s", out)
	}
	repo.CommitOn("next", map[string]string{"main.go": changed}, "v2 on a branch")
	desiredBefore, _, _ := store.Desired(ctx, "hello")
	out := plan("next")
	for _, want := range []string{"web: build, then roll out a new release, replacing " + rel.ID[:12] + ", at scale 2", "start on " + hostID, "stop  on " + hostID} {
		if !strings.Contains(out, want) {
			t.Fatalf("plan of the change does not say %q:\n%s", want, out)
		}
	}
	if desiredAfter, _, _ := store.Desired(ctx, "hello"); fmt.Sprint(desiredAfter) != fmt.Sprint(desiredBefore) {
		t.Fatal("plan changed the desired state")
	}
	commit2 := repo.CommitOn("main", map[string]string{"main.go": changed}, "v2")
	second := waitServing(t, consul, up, "Hello, world (v2) from ")
	for id := range first {
		if _, ok := second[id]; ok {
			t.Errorf("instance %s of the first release is still registered", id)
		}
	}
	testenv.Eventually(t, 30*time.Second, "only the new release's 2 containers", func() bool {
		cs := running(t, docker, hostID)
		for _, c := range cs {
			if c.Labels[hostd.LabelRelease] == rel.ID {
				return false
			}
		}
		return len(cs) == 2
	})
	desired, _, err := store.Desired(ctx, "hello")
	if err != nil || desired.Commit != commit2 {
		t.Fatalf("desired state: %+v %v, want commit %s", desired, err, commit2)
	}

	// 4. An invalid gilliam.yml: the error, with file and line, in the log and in status;
	// the running release keeps serving, untouched.
	before := running(t, docker, hostID)
	yml, err := os.ReadFile(filepath.Join(example, "gilliam.yml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(yml), "scale: 2", "scael: 2", 1)
	commit3 := repo.Commit(map[string]string{"gilliam.yml": bad}, "typo")
	line := up.WaitLog(60*time.Second, "commit not deployed; what runs keeps running", "commit="+commit3[:12])
	wantErr := "gilliam.yml:7:5: services.web.scael: unknown field, did you mean `scale`?"
	if msg := fmt.Sprint(line.Attrs["err"]); !strings.Contains(msg, wantErr) {
		t.Fatalf("log says %q, want it to contain %q", msg, wantErr)
	}
	statusOut, err := exec.Command(bin, "status", "--consul", consul.Addr).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, statusOut)
	}
	if !strings.Contains(string(statusOut), wantErr) || !strings.Contains(string(statusOut), "deployed "+commit2[:12]) {
		t.Fatalf("status does not show the error and the deployed commit:\n%s", statusOut)
	}
	time.Sleep(3 * time.Second) // a few more passes of the sync and host loops
	after := running(t, docker, hostID)
	if fmt.Sprint(ids(before)) != fmt.Sprint(ids(after)) {
		t.Fatalf("containers changed after an invalid gilliam.yml: %v -> %v", ids(before), ids(after))
	}
	for id, addr := range second {
		if got := testenv.HTTPGet("http://" + addr + "/"); !strings.HasPrefix(got, "Hello, world (v2) from ") {
			t.Errorf("%s at %s answers %q after the invalid commit", id, addr, got)
		}
	}
}

// waitServing waits until the hello-web service has 2 passing instances whose responses
// start with prefix, and returns their addresses by instance ID.
func waitServing(t *testing.T, consul *testenv.Consul, up *testenv.Process, prefix string) map[string]string {
	t.Helper()
	return waitServingAs(t, consul, "hello-web", prefix)
}

// waitServingAs is waitServing for the hello example deployed as another formation: its
// Consul service is service.
func waitServingAs(t *testing.T, consul *testenv.Consul, service, prefix string) map[string]string {
	t.Helper()
	var addrs map[string]string
	testenv.Eventually(t, 5*time.Minute, "2 passing instances answering "+prefix, func() bool {
		entries, _, err := consul.Client.Health().Service(service, "", true, nil)
		if err != nil || len(entries) != 2 {
			return false
		}
		addrs = map[string]string{}
		for _, e := range entries {
			addr := fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port)
			instance := e.Service.Meta["instance"]
			if got := testenv.HTTPGet("http://" + addr + "/"); got != prefix+instance {
				return false
			}
			addrs[instance] = addr
		}
		return true
	})
	return addrs
}

func onlyRelease(t *testing.T, store *state.Store, formation string) *state.Release {
	t.Helper()
	rels, err := store.Releases(context.Background(), formation)
	if err != nil || len(rels) != 1 {
		t.Fatalf("releases of %s: %d, %v; want 1", formation, len(rels), err)
	}
	return rels[0]
}

func running(t *testing.T, d *testenv.Docker, host string) []container.Summary {
	t.Helper()
	cs, err := d.Client.ContainerList(context.Background(), container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", hostd.LabelHost+"="+host)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func ids(cs []container.Summary) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	sort.Strings(out)
	return out
}

// timings splits push-to-serving into its steps, from the daemon's log and the moment the
// test saw both instances healthy.
func timings(up *testenv.Process, commit string, pushed, healthy time.Time) string {
	at := func(msg string, last bool, attrs ...string) time.Time {
		ls := up.Logs(msg, attrs...)
		if len(ls) == 0 {
			return time.Time{}
		}
		if last {
			return ls[len(ls)-1].Time
		}
		return ls[0].Time
	}
	c := "commit=" + commit[:12]
	steps := []struct {
		name string
		at   time.Time
	}{
		{"detect (poll every 1s)", at("new commit", false, c)},
		{"build (buildpacks, publish)", at("built", false, c)},
		{"release (Consul KV)", at("desired state written", false, c)},
		{"place (assignments)", at("assignments written", false)},
		{"start (pull, create, start)", at("instance started", true)},
		{"healthy (Consul check passing)", healthy},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "push to serving, hello formation (2 instances): %s\n", healthy.Sub(pushed).Round(10*time.Millisecond))
	prev := pushed
	for _, s := range steps {
		if s.at.IsZero() {
			fmt.Fprintf(&b, "  %-32s (not in the log)\n", s.name)
			continue
		}
		fmt.Fprintf(&b, "  %-32s %8s\n", s.name, s.at.Sub(prev).Round(time.Millisecond))
		prev = s.at
	}
	return strings.TrimRight(b.String(), "\n")
}
