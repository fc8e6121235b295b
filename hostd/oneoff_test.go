package hostd

import (
	"slices"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// A one-off's container is its release's, as an instance's, with no port, labelled as a
// one-off (never as an instance: the converge loop must not see it), running its command,
// through the launcher on a buildpack image.
func TestOneOffSpec(t *testing.T) {
	rel := &state.Release{ID: "r1", Formation: "shop", Service: "web", Image: "reg/shop/web@sha256:1",
		Env: map[string]string{"SECRET": "s"}, Ports: []state.Port{{Port: 8080}}, Command: []string{"serve"}}
	o := &state.OneOff{ID: "run-0000000001", Host: "h1", Formation: "shop", Service: "web", Release: "r1",
		Command: []string{"migrate", "--up"}, Attached: true}
	cfg, hc := oneOffSpec("h1", "10.0.0.1", o, rel, privileges{}, []string{"/app"})
	if len(cfg.ExposedPorts) != 0 || len(hc.PortBindings) != 0 {
		t.Errorf("a one-off publishes ports: %v %v", cfg.ExposedPorts, hc.PortBindings)
	}
	if _, ok := cfg.Labels[LabelInstance]; ok || cfg.Labels[LabelOneOff] != o.ID || cfg.Labels[LabelHost] != "h1" {
		t.Errorf("labels: %v", cfg.Labels)
	}
	if !slices.Equal(cfg.Cmd, o.Command) || cfg.Entrypoint != nil {
		t.Errorf("image service: entrypoint %v cmd %v", cfg.Entrypoint, cfg.Cmd)
	}
	for _, want := range []string{"SECRET=s", "GILLIAM_INSTANCE=" + o.ID, "GILLIAM_ONEOFF=" + o.ID} {
		if !slices.Contains(cfg.Env, want) {
			t.Errorf("env lacks %s: %v", want, cfg.Env)
		}
	}
	if cfg.OpenStdin || cfg.Tty || hc.CapDrop[0] != "ALL" || cfg.User != NobodyUser {
		t.Errorf("stdin %v tty %v capdrop %v user %q", cfg.OpenStdin, cfg.Tty, hc.CapDrop, cfg.User)
	}

	// A buildpack image runs the command through its launcher.
	cfg, _ = oneOffSpec("h1", "10.0.0.1", o, rel, privileges{ImageUser: "cnb"}, []string{"/cnb/process/web"})
	if !slices.Equal(cfg.Entrypoint, []string{"/cnb/lifecycle/launcher", "--"}) || cfg.User != "" {
		t.Errorf("buildpack image: entrypoint %v user %q", cfg.Entrypoint, cfg.User)
	}
	// -it on a terminal.
	o.Stdin, o.TTY, o.Cols, o.Rows = true, true, 120, 40
	cfg, hc = oneOffSpec("h1", "10.0.0.1", o, rel, privileges{}, nil)
	if !cfg.OpenStdin || !cfg.StdinOnce || !cfg.Tty || hc.ConsoleSize != [2]uint{40, 120} {
		t.Errorf("-it: %+v %v", cfg, hc.ConsoleSize)
	}
}

func TestCheckOneOffRefusesBadNames(t *testing.T) {
	ok := state.OneOff{ID: "run-0000000001", Host: "h1", Formation: "shop", Service: "web"}
	if err := checkOneOff(&ok, "h1"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []state.OneOff{
		{ID: "../x", Host: "h1", Formation: "shop", Service: "web"},
		{ID: "run-1", Host: "h2", Formation: "shop", Service: "web"},
		{ID: "run-1", Host: "h1", Formation: "Shop", Service: "web"},
	} {
		if checkOneOff(&bad, "h1") == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
