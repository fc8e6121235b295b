package hostd_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/registry"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// An instance whose check starts failing while its process runs on is restarted once the
// check has been critical past its grace for --unhealthy-after, with the crash backoff;
// status says why and counts it. Its healthy neighbour is left alone.
func TestUnhealthyInstanceIsRestarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := e.config(t)
	cfg.UnhealthyAfter = 2 * time.Second
	e.run(t, cfg, nil)

	sick := e.release(t, "sick", func(r *state.Release) {
		r.Env["HEALTH_FAIL_AFTER"] = "4s"
		r.Check.Grace = 2 * time.Second
		// Stopped for 3s, then 6s: long enough for a status write to show it on a busy machine.
		r.Restart = state.Restart{MinBackoff: 3 * time.Second, MaxBackoff: 10 * time.Second}
	})
	well := e.release(t, "well", func(r *state.Release) { r.Service = "well" })
	sickInst, wellInst := instances(sick, 1)[0], instances(well, 1)[0]
	e.assign(t, []state.Instance{sickInst, wellInst})
	testenv.Eventually(t, 30*time.Second, "the sick instance passing first", func() bool { return len(e.passing("demo-web")) == 1 })
	first := e.containers(t)[sickInst.ID].ID

	// Healthy for 4s, then critical: 2s later it is stopped and, after its backoff, started
	// again (the same container), healthy for 4s again, and so on.
	var waiting state.InstanceStatus
	testenv.Eventually(t, 30*time.Second, "the sick instance stopped as unhealthy", func() bool {
		st, _ := instanceStatus(e.status(t), sickInst.ID)
		if st.RestartReason == hostd.ReasonUnhealthy && st.State != "running" {
			waiting = st
			return true
		}
		return false
	})
	// The status is written at a limited rate: on a busy machine the first one seen may
	// already count the second restart.
	if !strings.HasPrefix(waiting.Error, "unhealthy: check critical") || waiting.UnhealthyRestarts < 1 {
		t.Errorf("status while stopped: %+v", waiting)
	}
	testenv.Eventually(t, 30*time.Second, "two unhealthy restarts, running again", func() bool {
		st, _ := instanceStatus(e.status(t), sickInst.ID)
		return st.UnhealthyRestarts == 2 && st.State == "running" && st.Restarts >= 2 && st.RestartReason == hostd.ReasonUnhealthy
	})
	if id := e.containers(t)[sickInst.ID].ID; id != first {
		t.Errorf("the container was replaced (%s, was %s): a restart starts the same one", id, first)
	}
	if n := e.logs.count("instance unhealthy: restarting"); n < 2 {
		t.Errorf("%d unhealthy restarts logged, want 2", n)
	}
	st, _ := instanceStatus(e.status(t), wellInst.ID)
	if st.UnhealthyRestarts != 0 || st.Restarts != 0 || st.State != "running" || st.Health != "passing" {
		t.Errorf("the healthy neighbour: %+v", st)
	}
	t.Logf("sick instance: %+v", waiting)
}

// variant pushes a copy of the test app under repo that differs by a label: another image
// (another digest) that runs the same.
func variant(t *testing.T, src, repo, label string, opts ...remote.Option) string {
	t.Helper()
	ref, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config.DeepCopy()
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	cfg.Labels["variant"] = label
	img, err = mutate.Config(img, *cfg)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := name.NewTag(repo+":"+label, name.Insecure)
	if err := remote.Write(dst, img, opts...); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return repo + "@" + d.String()
}

// A host removes the images it pulled once no assignment has named them for the grace,
// and reports them; never one a container was created from (anyone's), never one it did
// not pull.
func TestHostRemovesImagesNoLongerNamed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cfg := e.config(t)
	cfg.ImageGCGrace = 2 * time.Second
	e.run(t, cfg, nil)

	repo := e.registry.Addr + "/test/gc"
	a, b, used := variant(t, e.image, repo, "a"), variant(t, e.image, repo, "b"), variant(t, e.image, repo, "used")
	notOurs := variant(t, e.image, repo, "not-ours")
	e.docker.PullImage(t, notOurs) // in the engine before the host needs it: not its pull

	rel := func(img, service string) *state.Release {
		return e.release(t, service, func(r *state.Release) { r.Image, r.Service = img, service })
	}
	ra, rb, rUsed, rNotOurs := rel(a, "a"), rel(b, "b"), rel(used, "used"), rel(notOurs, "notours")
	e.assign(t, instances(ra, 1), instances(rUsed, 1), instances(rNotOurs, 1))
	testenv.Eventually(t, 60*time.Second, "three instances running", func() bool {
		st := e.status(t)
		n := 0
		for _, in := range st.Instances {
			if in.State == "running" {
				n++
			}
		}
		return st != nil && n == 3
	})

	// Someone creates a container from one of the host's pulls (never started): in use.
	created, err := e.docker.Client.ContainerCreate(ctx, &container.Config{Image: used, Labels: e.docker.Label}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	e.assign(t, instances(rb, 1))
	present := func(ref string) bool {
		_, err := e.docker.Client.ImageInspect(ctx, ref)
		if err != nil && !errdefs.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	testenv.Eventually(t, 30*time.Second, "the image of release a removed and reported", func() bool {
		st := e.status(t)
		return !present(a) && st != nil && len(st.ImagesRemoved) == 1 && st.ImagesRemoved[0].Image == a && st.ImagesRemoved[0].Bytes > 0
	})
	time.Sleep(3 * time.Second) // another grace period: nothing else goes
	if !present(b) || !present(used) || !present(notOurs) {
		t.Fatalf("present: named %v, in use %v, not pulled by the host %v; want all", present(b), present(used), present(notOurs))
	}
	if n := e.logs.count("image removed"); n != 1 {
		t.Errorf("%d removals logged, want 1", n)
	}

	// Once nothing uses it, it goes too.
	if err := e.docker.Client.ContainerRemove(ctx, created.ID, container.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the image no longer in use removed", func() bool { return !present(used) })
	if !present(b) || !present(notOurs) {
		t.Fatalf("present: named %v, not pulled by the host %v; want both", present(b), present(notOurs))
	}
	st := e.status(t)
	t.Logf("images removed: %+v", st.ImagesRemoved)
}

// Against the embedded registry, which asks who you are: a host given the pull credential
// (a Docker config, as gilliam-sync up writes it) pulls through the engine's X-Registry-
// Auth and runs the instance; a host without it cannot pull, and says so in status.
func TestHostPullsWithCredentials(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	creds, err := registry.GenerateCredentials()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(t.TempDir(), nil, creds)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	addr := l.Addr().String()
	push := remote.WithAuth(&authn.Basic{Username: creds.Push.Username, Password: creds.Push.Password})
	img := variant(t, e.image, addr+"/test/private", "private", push)
	t.Cleanup(func() { removeImage(e, img) })

	// Without credentials: refused.
	anon := e.config(t)
	anon.ID = e.hostID + "-anon"
	t.Cleanup(func() { e.docker.RemoveContainers(t, hostd.LabelHost, anon.ID) })
	stopAnon := e.run(t, anon, nil)
	r := e.release(t, "private", func(r *state.Release) { r.Image = img })
	assignTo(t, e, anon.ID, instances(r, 1))
	testenv.Eventually(t, 30*time.Second, "the anonymous pull refused in status", func() bool {
		st, err := e.store.HostStatus(context.Background(), anon.ID)
		if err != nil || st == nil || len(st.Instances) != 1 {
			return false
		}
		in := st.Instances[0]
		return in.State == "pulling" && strings.Contains(in.Error, "pull failed")
	})
	stopAnon()

	// With the pull credential, from the Docker config file gilliam-sync up writes.
	file := t.TempDir() + "/config.json"
	if err := registry.WriteDockerConfig(file, addr, creds.Pull); err != nil {
		t.Fatal(err)
	}
	auth, err := hostd.LoadRegistryAuth(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(t)
	cfg.RegistryAuth = auth
	e.run(t, cfg, nil)
	insts := instances(r, 1)
	e.assign(t, insts)
	testenv.Eventually(t, 60*time.Second, "the instance pulled with the pull credential, passing", func() bool {
		return e.allPassing(insts, "private")
	})
}

// assignTo writes the assignment of another host than e's.
func assignTo(t *testing.T, e *env, host string, insts []state.Instance) {
	t.Helper()
	ctx := context.Background()
	_, index, err := e.store.Assignment(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	a := &state.Assignment{Host: host, Instances: insts, Updated: time.Now().UTC()}
	if err := e.store.WriteAssignments(ctx, []*state.Assignment{a}, map[string]uint64{host: index}); err != nil {
		t.Fatal(err)
	}
}

func removeImage(e *env, ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.docker.Client.ImageRemove(ctx, ref, image.RemoveOptions{})
}
