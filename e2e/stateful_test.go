package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// statefulFormation is a store that keeps files in a volume, with a release phase (of
// timeout), and a web service that depends on it. storeEnv lines go in the store's env.
func statefulFormation(name, image, timeout string, storeEnv ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "formation: %s\nservices:\n", name)
	fmt.Fprintf(&b, "  store:\n    image: %s\n    ports: [8080]\n    internal: true\n", image)
	fmt.Fprintf(&b, "    check: {http: /healthz, interval: 1s, timeout: 1s}\n")
	fmt.Fprintf(&b, "    volumes: [{path: /data, size: 64Mi}]\n")
	fmt.Fprintf(&b, "    release: {command: [task, migrating the store], timeout: %s}\n", timeout)
	fmt.Fprintf(&b, "    rollout: {min_healthy: 1s, deadline: 3m}\n") // a failure detector: slow is not failed
	fmt.Fprintf(&b, "    env:\n")
	for _, e := range storeEnv {
		fmt.Fprintf(&b, "      %s\n", e)
	}
	fmt.Fprintf(&b, "  web:\n    image: %s\n    ports: [8080]\n    depends_on: [store]\n", image)
	fmt.Fprintf(&b, "    check: {http: /healthz, interval: 1s, timeout: 1s}\n")
	fmt.Fprintf(&b, "    env: {MESSAGE: web}\n")
	return b.String()
}

// testHost is a host daemon the test can stop (its containers keep running, as when a
// machine drops off the network) and start again with the same ID and data dir.
type testHost struct {
	id          string
	stop, start func()
}

func (h testHost) restart() { h.stop(); h.start() }

// restartableHost runs a host daemon that the test can stop and start again. At cleanup
// its containers and volumes are removed.
func (c *cluster) restartableHost(name string) testHost {
	c.t.Helper()
	id := uniqueID(name)
	cfg := hostd.Config{
		ID: id, Advertise: "127.0.0.1", DataDir: c.t.TempDir(), Resync: time.Second, HostTTL: 2 * time.Second,
		Capacity: hostd.MachineCapacity(),
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("host", id),
	}
	var mu stdsync.Mutex
	stop := func() {}
	start := func() {
		d, err := hostd.New(cfg, c.store, c.docker.Client)
		if err != nil {
			c.t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.Run(ctx); close(done) }()
		mu.Lock()
		stop = func() { cancel(); <-done }
		mu.Unlock()
	}
	halt := func() {
		mu.Lock()
		s := stop
		stop = func() {}
		mu.Unlock()
		s()
	}
	start()
	c.t.Cleanup(func() {
		if c.t.Failed() {
			hs, _ := c.store.HostStatus(context.Background(), id)
			as, _, _ := c.store.Assignments(context.Background())
			c.t.Logf("host status: %+v\nassignment: %+v", hs, as[id])
		}
		halt()
		c.docker.RemoveContainers(c.t, hostd.LabelHost, id)
		removeVolumes(c.t, c.docker, id)
	})
	return testHost{id: id, stop: halt, start: start}
}

// removeVolumes removes the instance volumes of a host.
func removeVolumes(t *testing.T, d *testenv.Docker, host string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := d.Client.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", hostd.LabelHost+"="+host))})
	if err != nil {
		t.Errorf("list volumes of %s: %v", host, err)
		return
	}
	for _, v := range list.Volumes {
		if err := d.Client.VolumeRemove(ctx, v.Name, true); err != nil {
			t.Errorf("remove volume %s: %v", v.Name, err)
		}
	}
}

func put(t *testing.T, url, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s", url, resp.Status)
	}
}

// A store's volume keeps its data across a new release and a restart of the host daemon;
// its release phase runs before each roll-out, and one that fails stops the roll-out,
// keeps the running release and says why in status.
func TestVolumesAndReleasePhase(t *testing.T) {
	parallel(t, 34*time.Second)
	c := newCluster(t)
	h := c.restartableHost("vol")
	host := h.id
	image := c.testImage()
	began := time.Now()
	const f = "vols"
	storeAnswers := func(msg string) string {
		t.Helper()
		var addr string
		testenv.Eventually(t, 90*time.Second, "the store answering "+msg, func() bool {
			for _, a := range c.passing(f + "-store") {
				if testenv.HTTPGet("http://"+a+"/") == msg {
					addr = a
					return true
				}
			}
			return false
		})
		return addr
	}

	c.repo.Commit(map[string]string{"gilliam.yml": statefulFormation(f, image, "30s", "MESSAGE: one")}, "one")
	c.sync("a", nil, "--dead-after", "3s")
	addr := storeAnswers("one")
	ph := c.desired(f, "store").ReleasePhase
	if ph == nil || ph.State != state.PhaseSucceeded || ph.Host != host {
		t.Fatalf("the first release's phase: %+v", ph)
	}
	if c.desired(f, "web").ReleasePhase != nil {
		t.Fatal("web has no release command but a release phase")
	}
	firstDeploy := time.Since(began)
	put(t, "http://"+addr+"/file/greeting", "kept")

	// A new release: its phase runs, then it replaces the store on the same host, with
	// the same volume.
	began = time.Now()
	c.repo.Commit(map[string]string{"gilliam.yml": statefulFormation(f, image, "30s", "MESSAGE: two")}, "two")
	addr = storeAnswers("two")
	newRelease := time.Since(began)
	ds := c.desired(f, "store")
	if ds.ReleasePhase.Release != ds.Latest || ds.ReleasePhase.State != state.PhaseSucceeded {
		t.Fatalf("the second release's phase: %+v (latest %s)", ds.ReleasePhase, ds.Latest)
	}
	if got := testenv.HTTPGet("http://" + addr + "/file/greeting"); got != "kept" {
		t.Fatalf("after a new release the volume holds %q", got)
	}

	// The host daemon restarts: the data is still there.
	h.restart()
	testenv.Eventually(t, 60*time.Second, "the store to read its file after the restart", func() bool {
		for _, a := range c.passing(f + "-store") {
			if testenv.HTTPGet("http://"+a+"/file/greeting") == "kept" {
				return true
			}
		}
		return false
	})

	// A release whose phase fails: the store keeps serving release two.
	began = time.Now()
	c.repo.Commit(map[string]string{"gilliam.yml": statefulFormation(f, image, "30s", "MESSAGE: three", "TASK_EXIT: \"3\"")}, "three: a failing migration")
	testenv.Eventually(t, 90*time.Second, "the release phase to fail", func() bool {
		ph := c.desired(f, "store").ReleasePhase
		return ph != nil && ph.State == state.PhaseFailed
	})
	failed := time.Since(began)
	ds = c.desired(f, "store")
	if ds.Failed != ds.Latest || !strings.Contains(ds.ReleasePhase.Error, "exit code 3") {
		t.Fatalf("after the failing phase: %+v, phase %+v", ds, ds.ReleasePhase)
	}
	time.Sleep(2 * time.Second) // passes of the leader: nothing may roll out
	if got := testenv.HTTPGet("http://" + addr + "/"); got != "two" {
		t.Fatalf("the store answers %q after a failed release phase", got)
	}
	st := c.cli("status", f)
	for _, want := range []string{"release phase of", "FAILED", "exit code 3", "task: migrating the store", "task: done, exit 3"} {
		if !strings.Contains(st, want) {
			t.Errorf("status does not say %q:\n%s", want, st)
		}
	}
	fs, err := c.store.FormationStatus(context.Background(), f)
	if err != nil || fs == nil || !strings.Contains(fs.Error, "release phase") || !strings.Contains(fs.Error, "exit code 3") {
		t.Fatalf("the formation's status record: %+v %v", fs, err)
	}

	// A release phase past its timeout is killed and fails the same way.
	c.repo.Commit(map[string]string{"gilliam.yml": statefulFormation(f, image, "2s", "MESSAGE: four", "TASK_SLEEP: 60s")}, "four: a migration that hangs")
	testenv.Eventually(t, 90*time.Second, "the release phase to time out", func() bool {
		ph := c.desired(f, "store").ReleasePhase
		return ph != nil && ph.State == state.PhaseFailed && strings.Contains(ph.Error, "timed out after 2s")
	})
	if got := testenv.HTTPGet("http://" + addr + "/"); got != "two" {
		t.Fatalf("the store answers %q after a release phase timed out", got)
	}

	// The volumes listing, and a removal refused while the slot is in use.
	vols := c.cli("volumes", f)
	if !strings.Contains(vols, "store/0") || !strings.Contains(vols, host) || !strings.Contains(vols, "/data") || !strings.Contains(vols, "64.0Mi") {
		t.Fatalf("volumes:\n%s", vols)
	}
	if out, err := c.cliErr("volumes", "rm", f, "store/0"); err == nil || !strings.Contains(out, "in use") {
		t.Fatalf("volumes rm of a slot in use: %v\n%s", err, out)
	}

	// The store's host is lost while another host is up: the store is not started empty
	// there, and status says where its volumes are. The host comes back: the store runs
	// there again, with its data.
	other := c.restartableHost("vol2")
	h.stop()
	began = time.Now()
	running := c.desired(f, "store")
	store := state.InstanceID(f, "store", running.Target(), 0)
	// Dead, then gone from the catalog once the leader removed its registrations.
	reason := "its volumes are on host " + host + ", which is "
	testenv.Eventually(t, 90*time.Second, "the store to be unplaceable for its volumes", func() bool {
		r, err := c.store.PlacementReport(context.Background())
		return err == nil && slices.ContainsFunc(r.Unplaced, func(u state.UnplacedInstance) bool {
			return u.Instance == store && strings.HasPrefix(u.Reason, reason) && !strings.Contains(u.Reason, "critical")
		})
	})
	lost := time.Since(began)
	if out := c.cli("status", f); !strings.Contains(out, reason) {
		t.Fatalf("status does not say why the store is not placed:\n%s", out)
	}
	if on := c.assigned()[store]; on != "" {
		t.Fatalf("the store is assigned to %s without its volumes", on)
	}
	h.start()
	testenv.Eventually(t, 90*time.Second, "the store back on its host", func() bool {
		if c.assigned()[store] != host {
			return false
		}
		for _, a := range c.passing(f + "-store") {
			if testenv.HTTPGet("http://"+a+"/file/greeting") == "kept" {
				return true
			}
		}
		return false
	})
	for id, on := range c.assigned() {
		if strings.HasPrefix(id, f+"-store-") && on == other.id {
			t.Fatalf("a store instance went to %s, without its volumes", other.id)
		}
	}
	// Scaled to 0, the slot's volume stays; `volumes rm` removes it.
	c.cli("scale", f, "store=0")
	testenv.Eventually(t, 60*time.Second, "the store to stop", func() bool { return len(c.passing(f+"-store")) == 0 })
	if _, err := c.docker.Client.VolumeInspect(context.Background(), state.VolumeName(host, f, "store", 0, "/data")); err != nil {
		t.Fatalf("the volume went with the scale down: %v", err)
	}
	c.cli("volumes", "rm", f, "store/0")
	testenv.Eventually(t, 60*time.Second, "the volume removed", func() bool {
		_, err := c.docker.Client.VolumeInspect(context.Background(), state.VolumeName(host, f, "store", 0, "/data"))
		return err != nil
	})
	testenv.Report(t, "e2e-volumes-release-phase", fmt.Sprintf("first deploy with a release phase %s, new release (phase + replacement) %s, failing phase reported %s, host loss reported unplaceable %s",
		firstDeploy.Round(100*time.Millisecond), newRelease.Round(100*time.Millisecond), failed.Round(100*time.Millisecond), lost.Round(100*time.Millisecond)))
}

// cliErr runs a gilliam-sync command that may fail, and returns its output and error.
func (c *cluster) cliErr(args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(cmd.Environ(), c.consul.Env()...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
