package schema

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse feeds the parser arbitrary bytes: it must never panic, and must return either
// a formation that keeps the promises callers rely on, or an ErrorList with positioned
// errors. The seed corpus (every example, every invalid case and the edge cases below)
// runs in plain go test; go test -fuzz=FuzzParse explores from it.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(repoRoot, "examples/formations/*/gilliam.yml"))
	invalid, _ := filepath.Glob(filepath.Join(repoRoot, "examples/formations/invalid/*/gilliam.yml"))
	testdata, _ := filepath.Glob("testdata/*.yml")
	for _, file := range slices.Concat(files, invalid, testdata) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, src := range allowed {
		f.Add([]byte(src))
	}
	for _, src := range []string{
		"", "\x00", "\xff\xfe", "---", "...", "- - -", "{", "[", "&a *a", "*a", "<<: *a",
		"a: &a [*a]", "x-a: &a {b: *a}\nservices: *a", "services: &s {web: *s}",
		"services:\n  web:\n    <<: [*x]\n", "services:\n  web:\n    <<: {<<: {path: .}}\n",
		"services:\n  ? [a]\n  : b\n", "services:\n  !!binary aGk=: {path: .}\n",
		"services: {web: {path: ., ports: [{port: 1}, {port: 1}], depends_on: [web, web]}}",
		"services: {a: {path: a, depends_on: [b]}, b: {path: b, depends_on: [a]}}",
		"services: {web: {path: ., check: {http: /, tcp: true}}}",
		"services: {web: {image: a, type: image, path: ., process: web, command: [x]}}",
		"formation: " + strings.Repeat("a", 100) + "\nservices: {web: {path: .}}",
		"services: {web: {path: ., env: {\"\": x, \"a b\": y}}}",
		"previews: {services: {nope: {scale: 1}}}\nservices: {web: {path: .}}",
		"services: {web: {path: ., resources: {cpu: 9999.999, memory: 999999999999999Ti}}}",
		"services: {web: {path: ., rollout: {min_healthy: 9223372036s, deadline: 1ns}}}",
		"%YAML 1.2\n---\nservices: {web: {path: .}}\n", "%TAG ! tag:x:\n--- !foo\na: b\n",
		"services:\n  web:\n    path: |\n      a\n      b\n",
		"\ufeffservices: {web: {path: .}}",
	} {
		f.Add([]byte(src))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		form, err := Parse("gilliam.yml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if e.File != "gilliam.yml" || e.Msg == "" || e.Line < 0 || e.Column < 0 {
					t.Fatalf("malformed error %+v", e)
				}
				// decodeYAML turns a panic of yaml.v3 into an error, so that the control
				// plane survives a parser bug; here it is a finding.
				if strings.Contains(e.Msg, "the YAML parser failed") {
					t.Fatalf("yaml.v3 panicked: %v", e.Msg)
				}
			}
			if form != nil {
				t.Fatal("a formation returned with errors")
			}
			return
		}
		checkPromises(t, form)
	})
}

// checkPromises checks what a caller may rely on in a formation Parse returned.
func checkPromises(t *testing.T, f *Formation) {
	if f.Name != "" && checkLabel(f.Name) != nil {
		t.Fatalf("formation name %q", f.Name)
	}
	if len(f.Services) == 0 || f.Env == nil || f.Previews.Services == nil {
		t.Fatalf("empty or nil parts: %+v", f)
	}
	order := f.StartOrder()
	if len(order) != len(f.Services) {
		t.Fatalf("StartOrder %v for %d services", order, len(f.Services))
	}
	position := map[string]int{}
	for i, name := range order {
		position[name] = i
	}
	for name, s := range f.Services {
		if s.Name != name || checkLabel(name) != nil || s.Env == nil {
			t.Fatalf("service %q: %+v", name, s)
		}
		switch s.Type {
		case TypeImage:
			if s.Image == "" || s.Path != "" || s.Process != "" {
				t.Fatalf("image service %q: %+v", name, s)
			}
		case TypeBuildpack, TypeDockerfile:
			if s.Path == "" || s.Image != "" || strings.HasPrefix(s.Path, "/") || s.Path == ".." || strings.HasPrefix(s.Path, "../") {
				t.Fatalf("built service %q: %+v", name, s)
			}
		default:
			t.Fatalf("service %q type %q", name, s.Type)
		}
		if s.Scale < 0 || s.Scale > MaxScale {
			t.Fatalf("scale %d", s.Scale)
		}
		seen := map[int]bool{}
		for _, p := range s.Ports {
			if p.Port < 1 || p.Port > 65535 || seen[p.Port] {
				t.Fatalf("ports %v", s.Ports)
			}
			seen[p.Port] = true
		}
		if s.Check.Type != CheckNone && len(s.Ports) == 0 {
			t.Fatalf("check %q without a port", s.Check.Type)
		}
		if s.Check.Type == CheckHTTP && !strings.HasPrefix(s.Check.Path, "/") {
			t.Fatalf("http check path %q", s.Check.Path)
		}
		if s.Check.Timeout > s.Check.Interval || s.Rollout.Deadline <= s.Rollout.MinHealthy || s.Restart.MaxBackoff < s.Restart.MinBackoff {
			t.Fatalf("timings %+v %+v %+v", s.Check, s.Rollout, s.Restart)
		}
		if s.Rollout.MaxParallel < 1 || s.Resources.CPU < 1 || s.Resources.Memory < 6<<20 {
			t.Fatalf("rollout %+v resources %+v", s.Rollout, s.Resources)
		}
		for _, dep := range s.DependsOn {
			if f.Services[dep] == nil || dep == name || position[dep] > position[name] {
				t.Fatalf("%s depends on %s, order %v", name, dep, order)
			}
		}
	}
	for name := range f.Previews.Services {
		if f.Services[name] == nil {
			t.Fatalf("preview override of unknown service %q", name)
		}
	}
}
