package build

import (
	"errors"
	"strings"
	"testing"
)

// The registry policy from names alone (the dial-time check is in the integration test).
func TestRegistriesCheck(t *testing.T) {
	open := Registries{Insecure: []string{"127.0.0.1:5000"}}
	listedOnly := Registries{Allowed: []string{"registry.example.com", "10.0.0.5:5000"}}
	for _, tc := range []struct {
		policy Registries
		image  string
		why    string // "" when allowed
	}{
		{open, "redis:7", ""},
		{open, "ghcr.io/team/app:1", ""},
		{open, "127.0.0.1:5000/team/app:1", ""},
		{open, "127.0.0.1:8500/v1/kv:x", "a loopback address"},
		{open, "127.0.0.2/app", "a loopback address"},
		{open, "169.254.169.254/latest:x", "a link-local address"},
		{open, "10.0.0.5:5000/app", "a private address"},
		{open, "192.168.1.1/app", "a private address"},
		{open, "100.64.0.1/app", "a private address"},
		{open, "[::1]:5000/app", "a loopback address"},
		{open, "[fe80::1]:5000/app", "a link-local address"},
		{open, "[::ffff:127.0.0.1]:5000/app", "a loopback address"},
		{open, "localhost:5000/app", "localhost"},
		{open, "0.0.0.0:5000/app", "not a unicast address"},
		{listedOnly, "registry.example.com/app:1", ""},
		{listedOnly, "10.0.0.5:5000/app", ""},
		{listedOnly, "redis:7", "not listed"},
		{listedOnly, "ghcr.io/team/app", "not listed"},
	} {
		_, err := tc.policy.Check(tc.image)
		var perr *PolicyError
		switch {
		case tc.why == "" && err != nil:
			t.Errorf("%s: %v, want it allowed", tc.image, err)
		case tc.why != "" && (!errors.As(err, &perr) || !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), tc.image)):
			t.Errorf("%s: %v, want a *PolicyError naming the image: %s", tc.image, err, tc.why)
		}
	}
}

// Isolation's defaults, and the networks it refuses.
func TestIsolationDefaults(t *testing.T) {
	iso, err := Isolation{}.withDefaults()
	if err != nil || iso.Network != "none" || iso.Memory != DefaultMemory || iso.CPUs != DefaultCPUs || iso.Pids != DefaultPids {
		t.Fatalf("defaults %+v, %v", iso, err)
	}
	for _, bad := range []Isolation{{Network: "host"}, {Network: "container:abc"}, {Memory: 1 << 20}, {Pids: 2}, {CPUs: -1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if iso, err := (Isolation{Network: "builds"}).withDefaults(); err != nil || iso.Network != "builds" {
		t.Errorf("a network of the operator's: %+v, %v", iso, err)
	}
}
