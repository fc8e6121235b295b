package hostd

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/state"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares v, as indented JSON, with testdata/name; -update rewrites the file.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n%s", path, got)
	}
}

var testRelease = &state.Release{
	ID: "0123456789abcdef0123", Formation: "shop", Service: "web",
	Image:     "registry.local/shop/web@sha256:1111111111111111111111111111111111111111111111111111111111111111",
	Env:       map[string]string{"MESSAGE": "hi", "PORT": "1"},
	Command:   []string{"web", "--serve"},
	Ports:     []state.Port{{Port: 8080, Name: "http"}, {Port: 9090, Name: "metrics"}},
	Check:     state.Check{Type: "http", Path: "/healthz", Interval: 5 * time.Second, Timeout: time.Second},
	Resources: state.Resources{CPU: 250, Memory: 128 << 20},
	Commit:    "abc123",
}

var testInstance = state.Instance{ID: "shop-web-01234567-2", Formation: "shop", Service: "web", Release: testRelease.ID, Index: 2}

func TestContainerSpecGolden(t *testing.T) {
	cfg, hc := containerSpec("host-1", "10.0.0.5", testInstance, testRelease, privileges{})
	// What the host daemon sets, not every field of the engine's types.
	golden(t, "container.json", specFields(cfg, hc))

	// A release with a low port, read-only, of an image that names its user, with the
	// host's own pids limit.
	low := *testRelease
	low.Ports = []state.Port{{Port: 80}}
	low.ReadOnly = true
	low.Resources = state.Resources{}
	cfg, hc = containerSpec("host-1", "10.0.0.5", testInstance, &low, privileges{ImageUser: "cnb", PidsLimit: 64})
	golden(t, "container-low-port-read-only.json", specFields(cfg, hc))
}

func specFields(cfg *container.Config, hc *container.HostConfig) map[string]any {
	return map[string]any{
		"Image": cfg.Image, "Env": cfg.Env, "Entrypoint": cfg.Entrypoint, "Cmd": cfg.Cmd,
		"ExposedPorts": cfg.ExposedPorts, "Labels": cfg.Labels, "User": cfg.User,
		"PortBindings": hc.PortBindings, "RestartPolicy": hc.RestartPolicy,
		"CPUShares": hc.CPUShares, "NanoCPUs": hc.NanoCPUs, "Memory": hc.Memory, "PidsLimit": hc.PidsLimit,
		"CapDrop": hc.CapDrop, "CapAdd": hc.CapAdd, "SecurityOpt": hc.SecurityOpt,
		"ReadonlyRootfs": hc.ReadonlyRootfs, "Tmpfs": hc.Tmpfs, "LogConfig": hc.LogConfig,
	}
}

func TestRegistrationGolden(t *testing.T) {
	// As the agent is sent it: DisableRedirects on the HTTP check.
	golden(t, "registration.json", definition(registration("gilliam", "host-1", "10.0.0.5", testInstance, testRelease, 32768, time.Minute)))

	tcp := *testRelease
	tcp.Check = state.Check{Type: "tcp"}
	none := *testRelease
	none.Check = state.Check{Type: "none"}
	noPorts := *testRelease
	noPorts.Ports = nil
	golden(t, "registration-checks.json", map[string]any{
		"tcp, default timings": definition(registration("gilliam", "host-1", "10.0.0.5", testInstance, &tcp, 32768, time.Minute)).Check,
		"none":                 registration("gilliam", "host-1", "10.0.0.5", testInstance, &none, 32768, time.Minute).Check,
		"no ports":             registration("gilliam", "host-1", "10.0.0.5", testInstance, &noPorts, 0, time.Minute).Check,
	})
}

func TestRegistrationHash(t *testing.T) {
	a := registration("gilliam", "host-1", "10.0.0.5", testInstance, testRelease, 32768, time.Minute)
	b := registration("gilliam", "host-1", "10.0.0.5", testInstance, testRelease, 32768, time.Minute)
	c := registration("gilliam", "host-1", "10.0.0.5", testInstance, testRelease, 32769, time.Minute) // restarted on another port
	if a.Meta[MetaRegistration] == "" || a.Meta[MetaRegistration] != b.Meta[MetaRegistration] {
		t.Errorf("the same registration hashes differently: %q %q", a.Meta[MetaRegistration], b.Meta[MetaRegistration])
	}
	if a.Meta[MetaRegistration] == c.Meta[MetaRegistration] {
		t.Error("a new port does not change the hash")
	}
	if again := sealed(a); again.Meta[MetaRegistration] != b.Meta[MetaRegistration] {
		t.Error("sealing twice changes the hash")
	}
}

func TestRegistrationChanges(t *testing.T) {
	reg := func(id, hash string) *api.AgentServiceRegistration {
		return &api.AgentServiceRegistration{ID: id, Meta: map[string]string{MetaRegistration: hash}}
	}
	svc := func(hash string) *api.AgentService {
		return &api.AgentService{Meta: map[string]string{MetaRegistration: hash}}
	}
	want := map[string]*api.AgentServiceRegistration{
		"same": reg("same", "h1"), "moved": reg("moved", "h2"), "lost": reg("lost", "h3"), "unknown-release": nil,
	}
	have := map[string]*api.AgentService{
		"same": svc("h1"), "moved": svc("old"), "unknown-release": svc("h4"), "stale": svc("h5"),
	}
	register, deregister := registrationChanges(want, have)
	var ids []string
	for _, r := range register {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, []string{"lost", "moved"}) || !slices.Equal(deregister, []string{"stale"}) {
		t.Errorf("register %v, deregister %v", ids, deregister)
	}
}

func TestStatusPacing(t *testing.T) {
	const interval, refresh = time.Second, time.Minute
	st := func(s string) *state.HostStatus {
		return &state.HostStatus{Host: "h", Instances: []state.InstanceStatus{{ID: "a", State: s}}}
	}
	var w statusWriter
	if write, _ := w.due(st("running"), t0, interval, refresh); !write {
		t.Fatal("the first status is not written")
	}
	w.wrote(st("running"), t0, nil)
	if write, at := w.due(st("running"), t0.Add(10*time.Second), interval, refresh); write || !at.Equal(t0.Add(refresh)) {
		t.Errorf("unchanged: write %v, next at %v", write, at)
	}
	if write, at := w.due(st("exited"), t0.Add(100*time.Millisecond), interval, refresh); write || !at.Equal(t0.Add(interval)) {
		t.Errorf("changed too soon: write %v, next at %v", write, at)
	}
	if write, _ := w.due(st("exited"), t0.Add(interval), interval, refresh); !write {
		t.Error("a change is not written after the interval")
	}
	if write, _ := w.due(st("running"), t0.Add(refresh), interval, refresh); !write {
		t.Error("an unchanged status is not refreshed")
	}
	w.wrote(st("running"), t0.Add(2*time.Second), errString("consul down"))
	if write, _ := w.due(st("running"), t0.Add(4*time.Second), interval, refresh); !write {
		t.Error("after a failed write, the same status is not written again")
	}
}

func TestLoadRegistryAuth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(path, []byte(`{"auths": {
		"127.0.0.1:5000": {"auth": "cHVsbDpzM2NyZXQ="},
		"https://registry.example.com/": {"username": "u", "password": "p"}}}`), 0o600)
	auth, err := LoadRegistryAuth(path)
	if err != nil {
		t.Fatal(err)
	}
	if auth["127.0.0.1:5000"] != (RegistryCredential{"pull", "s3cret"}) || auth["registry.example.com"] != (RegistryCredential{"u", "p"}) || len(auth) != 2 {
		t.Errorf("auth %v", auth)
	}
	os.WriteFile(path, []byte(`{"auths": {"r:1": {"auth": "bm8tY29sb24="}}}`), 0o600)
	if _, err := LoadRegistryAuth(path); err == nil || strings.Contains(err.Error(), "no-colon") {
		t.Errorf("a malformed auth: %v (the secret must not show)", err)
	}
	for ref, want := range map[string]string{
		"127.0.0.1:5000/a/b@sha256:00": "127.0.0.1:5000", "registry.example.com/x:1": "registry.example.com",
		"localhost/x": "localhost", "redis:7": "docker.io", "library/redis": "docker.io",
	} {
		if got := registryHost(ref); got != want {
			t.Errorf("registryHost(%q) = %q, want %q", ref, got, want)
		}
	}
}
