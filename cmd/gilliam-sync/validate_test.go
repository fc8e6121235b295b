package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runCLI runs the binary's run function as main would and returns what it printed.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// The invalid examples' golden files hold exactly what `gilliam-sync validate
// examples/formations/invalid/<case>`, run at the repository root, prints.
func TestValidateInvalidExamples(t *testing.T) {
	t.Chdir("../..")
	dirs, _ := filepath.Glob("examples/formations/invalid/*")
	if len(dirs) < 10 {
		t.Fatalf("found %d invalid examples", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(dir, "expected.txt"))
			if err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runCLI(t, "validate", dir)
			if code != 1 || stdout != "" || stderr != string(want) {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 1 and:\n%s", code, stdout, stderr, want)
			}
		})
	}
}

func TestValidateValidExamples(t *testing.T) {
	t.Chdir("../..")
	files, _ := filepath.Glob("examples/formations/*/gilliam.yml")
	if len(files) < 3 {
		t.Fatalf("found %d valid examples, want hello, counter and monorepo at least", len(files))
	}
	summary := regexp.MustCompile(`^examples/formations/[a-z-]+/gilliam.yml: formation [a-z0-9-]+, (1 service|[0-9]+ services), valid\n$`)
	for _, file := range files {
		for _, arg := range []string{file, filepath.Dir(file), filepath.Dir(file) + "/"} {
			code, stdout, stderr := runCLI(t, "validate", arg)
			if code != 0 || !summary.MatchString(stdout) || stderr != "" {
				t.Errorf("validate %s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
			}
		}
	}
}

func TestValidateDefaultsToCurrentFolder(t *testing.T) {
	t.Chdir("../../examples/formations/monorepo")
	code, stdout, _ := runCLI(t, "validate")
	if code != 0 || stdout != "gilliam.yml: formation quotes, 2 services, valid\n" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestValidateDefaultName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "My_Shop")
	writeFile(t, filepath.Join(dir, "gilliam.yml"), "services:\n  web:\n    path: .\n")
	code, stdout, _ := runCLI(t, "validate", dir)
	want := filepath.Join(dir, "gilliam.yml") + ": formation my-shop (from the folder's name: set formation: to choose), 1 service, valid\n"
	if code != 0 || stdout != want {
		t.Errorf("exit %d, stdout %q, want %q", code, stdout, want)
	}
}

func TestValidateJSON(t *testing.T) {
	t.Chdir("../..")
	code, stdout, stderr := runCLI(t, "validate", "examples/formations/counter", "--output", "json")
	var res validateResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 0 || stderr != "" {
		t.Fatalf("exit %d, %v, stdout %q, stderr %q", code, err, stdout, stderr)
	}
	if !res.Valid || res.Formation != "counter" || strings.Join(res.Services, ",") != "store,web" || res.Errors == nil || len(res.Errors) != 0 {
		t.Errorf("result = %+v", res)
	}

	code, stdout, stderr = runCLI(t, "validate", "--output", "json", "examples/formations/invalid/dependencies")
	var raw map[string]any
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil || code != 1 || stderr != "" {
		t.Fatalf("exit %d, %v, stdout %q, stderr %q", code, err, stdout, stderr)
	}
	if raw["valid"] != false {
		t.Errorf("valid = %v", raw["valid"])
	}
	errs := raw["errors"].([]any)
	first := errs[0].(map[string]any)
	want := map[string]any{"file": "examples/formations/invalid/dependencies/gilliam.yml", "line": 6.0, "column": 18.0,
		"path": "services.web.depends_on[0]", "message": "dependency cycle: web -> api -> worker -> web"}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("errors[0].%s = %v, want %v", k, first[k], v)
		}
	}
	if len(errs) != 5 {
		t.Errorf("%d errors, want the 5 of expected.txt", len(errs))
	}
}

func TestValidateUnreadable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yml")
	code, stdout, stderr := runCLI(t, "validate", missing)
	if code != 1 || stdout != "" || stderr != missing+": cannot read the file: no such file or directory\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "validate", "--output=json", missing)
	if code != 1 || !strings.Contains(stdout, `"message": "cannot read the file: no such file or directory"`) {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestValidateUsage(t *testing.T) {
	for _, args := range [][]string{{"validate", "a", "b"}, {"validate", "--output", "yaml"}, {"validate", "--nope"}} {
		if code, stdout, stderr := runCLI(t, args...); code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: gilliam-sync validate") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "validate", "-h"); code != 0 || !strings.Contains(stderr, "--output") && !strings.Contains(stderr, "-output") {
		t.Errorf("-h: exit %d, stderr %q", code, stderr)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
