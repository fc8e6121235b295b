package names_test

import (
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

func TestCacheVolumesOfTwoInstallationsDiffer(t *testing.T) {
	a := names.CacheVolume("127.0.0.1:5000", "shop", "web", "build")
	b := names.CacheVolume("registry.example.com:5000", "shop", "web", "build")
	if a == b || !strings.HasPrefix(a, names.CacheVolumePrefix) || !strings.HasSuffix(a, ".shop.web.build") {
		t.Fatalf("%s and %s", a, b)
	}
	if names.CacheVolume("127.0.0.1:5000/", "shop", "web", "build") != a {
		t.Fatal("a trailing slash changed the name")
	}
	if names.CacheVolume("r", "a-b", "c", "build") == names.CacheVolume("r", "a", "b-c", "build") {
		t.Fatal("(a-b, c) and (a, b-c) share a cache")
	}
}

func TestServiceNameConflict(t *testing.T) {
	for _, c := range []struct {
		formation string
		services  []string
		others    map[string][]string
		want      string
	}{
		{"shop", []string{"web"}, nil, ""},
		{"gilliam", []string{"host"}, nil, "platform's own"},
		{"gilliam-x", []string{"web"}, nil, "platform's own"},
		{"a", []string{"b-c"}, map[string][]string{"a-b": {"c"}}, "already that of a-b/c"},
		{"a", []string{"b-c"}, map[string][]string{"a": {"b-c"}}, ""},
		{strings.Repeat("f", 40), []string{strings.Repeat("s", 30)}, nil, "over DNS's 63"},
	} {
		got := names.ServiceNameConflict(c.formation, c.services, c.others)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s %v: %q, want %q", c.formation, c.services, got, c.want)
		}
	}
}
