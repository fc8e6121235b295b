package schema

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestVolumesAndReleasePhase(t *testing.T) {
	f, err := Parse("gilliam.yml", []byte(`services:
  store:
    image: x/store:1
    volumes: [/data/, {path: /var/lib/x, size: 1Gi}]
    release: {command: [store, migrate]}
  web:
    image: x/web:1
    release: {command: "./migrate up", timeout: 30s}
`))
	if err != nil {
		t.Fatal(err)
	}
	store, web := f.Services["store"], f.Services["web"]
	if want := []Volume{{Path: "/data"}, {Path: "/var/lib/x", Size: 1 << 30}}; !slices.Equal(store.Volumes, want) {
		t.Errorf("volumes %v, want %v", store.Volumes, want)
	}
	if r := store.Release; r == nil || !slices.Equal(r.Command, []string{"store", "migrate"}) || r.Shell || r.Timeout != DefaultReleaseTimeout {
		t.Errorf("store release %+v", r)
	}
	if r := web.Release; r == nil || !slices.Equal(r.Command, []string{"./migrate up"}) || !r.Shell || r.Timeout != 30*time.Second {
		t.Errorf("web release %+v", r)
	}
	if web.Volumes != nil && len(web.Volumes) != 0 || f.Services["web"].Release == nil {
		t.Errorf("web volumes %v", web.Volumes)
	}

	for _, c := range []struct{ yml, want string }{
		{"volumes: [data]", "4:15: services.s.volumes[0]: `data` is not an absolute path"},
		{"volumes: [/]", "4:15: services.s.volumes[0]: the root folder cannot be a volume"},
		{"volumes: [/tmp/x]", "is the engine's"},
		{"volumes: [/a, /a/b]", "4:19: services.s.volumes[1]: `/a/b` and volumes[0] (`/a`) are one inside the other"},
		{"volumes: [/a, /a]", "services.s.volumes[1]: `/a` is already volumes[0]"},
		{"volumes: [{size: 1Gi}]", "services.s.volumes[0]: missing required field `path`"},
		{"volumes: [{path: /a, size: 10}]", "must be at least 1Mi"},
		{"volumes: [7]", "must be a path such as /data"},
		{"release: {}", "services.s.release: missing required field `command`"},
		{"release: {command: []}", "services.s.release.command: must not be empty"},
		{"release: {command: x, timeout: 0s}", "services.s.release.timeout: must be at least 1s"},
		{"release: {comand: x}", "did you mean `command`?"},
	} {
		_, err := Parse("gilliam.yml", []byte("services:\n  s:\n    image: x/y:1\n    "+c.yml+"\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.yml, err, c.want)
		}
	}
}
