package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/build"
)

// The builds' isolation and registry keys of gilliam-sync.yml reach build.Config; the host's
// network and a memory that is not a size are refused with the key named.
func TestBuildsIsolationConfig(t *testing.T) {
	write := func(builds string) string {
		p := filepath.Join(t.TempDir(), "gilliam-sync.yml")
		text := "registry: 127.0.0.1:5000\nrepos: [{url: /srv/git/shop.git}]\nbuilds:\n" + builds
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := loadDaemonConfig(write("  network: builds\n  memory: 1g\n  cpus: 1.5\n  pids: 512\n  dockerfile_urls: true\n" +
		"  allowed_registries: [registry.example.com]\n  insecure_registries: [10.0.0.5:5000]\n"))
	if err != nil {
		t.Fatal(err)
	}
	iso, err := cfg.buildIsolation()
	want := build.Isolation{Network: "builds", Memory: 1 << 30, CPUs: 1.5, Pids: 512, DockerfileURLs: true}
	if err != nil || iso != want {
		t.Errorf("isolation %+v, %v; want %+v", iso, err, want)
	}
	wantRegs := build.Registries{Allowed: []string{"registry.example.com"}, Insecure: []string{"10.0.0.5:5000"}}
	if regs := cfg.buildRegistries(); !reflect.DeepEqual(regs, wantRegs) {
		t.Errorf("registries %+v, want %+v", regs, wantRegs)
	}

	for builds, want := range map[string]string{
		"  network: host\n":  "builds.network: host would give the code built the host's loopback",
		"  memory: lots\n":   "builds.memory: ",
		"  networks: none\n": "field networks not found",
		"  pids: [1]\n":      "cannot unmarshal",
	} {
		if _, err := loadDaemonConfig(write(builds)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", builds, err, want)
		}
	}
}
