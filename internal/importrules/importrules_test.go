package importrules

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gilliam-sync/gilliam-sync"

// Families of outside dependencies the rules speak of, by import path prefix.
var (
	docker = []string{"github.com/docker/", "github.com/moby/"}
	consul = []string{"github.com/hashicorp/consul/"}
	gogit  = []string{"github.com/go-git/"}
	pack   = []string{"github.com/buildpacks/"}
)

// rule: the packages under pkg (and below) must not depend, even transitively, on any path
// with one of the forbidden prefixes; when onlyStd is set, every dependency must be from the
// standard library or allowed.
type rule struct {
	pkg       string
	forbidden [][]string
	onlyStd   bool
	allowed   []string
}

var rules = []rule{
	{pkg: "schema", onlyStd: true, allowed: []string{"gopkg.in/yaml.v3"}},
	{pkg: "placement", onlyStd: true},
	{pkg: "hostd", forbidden: [][]string{{module + "/sync", module + "/build", module + "/gitwatch"}, gogit, pack}},
	{pkg: "router", forbidden: [][]string{{module + "/sync", module + "/build", module + "/gitwatch", module + "/hostd"}, docker, gogit, pack}},
	{pkg: "state", forbidden: [][]string{{module + "/sync", module + "/build", module + "/gitwatch", module + "/hostd"}, docker, gogit, pack}},
	{pkg: "gitwatch", forbidden: [][]string{{module + "/sync", module + "/build", module + "/hostd", module + "/state"}, docker, consul, pack}},
	// The forge clients know HTTP and nothing of the control plane.
	{pkg: "forge", onlyStd: true, allowed: []string{module + "/internal/fault"}},
	{pkg: "build", forbidden: [][]string{{module + "/sync", module + "/hostd", module + "/gitwatch", module + "/state"}, consul}},
	// The cluster harness runs the gilliam-sync binary; it links none of the daemons.
	{pkg: "internal/cluster", forbidden: [][]string{{module + "/sync", module + "/build", module + "/hostd", module + "/gitwatch"}}},
}

type listed struct {
	ImportPath string
	Deps       []string
}

func goList(t *testing.T) []listed {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Deps", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listed
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func hasPrefix(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == strings.TrimSuffix(p, "/") || strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

// violations is the rule check itself, kept apart from go list so it can be tested.
func violations(pkgs []listed) []string {
	var bad []string
	for _, p := range pkgs {
		for _, dep := range p.Deps {
			if hasPrefix(dep, []string{module + "/cmd"}) {
				bad = append(bad, p.ImportPath+" imports "+dep+": nothing imports cmd/")
			}
		}
		for _, r := range rules {
			if !hasPrefix(p.ImportPath, []string{module + "/" + r.pkg}) {
				continue
			}
			for _, dep := range p.Deps {
				for _, f := range r.forbidden {
					if hasPrefix(dep, f) {
						bad = append(bad, p.ImportPath+" depends on "+dep)
					}
				}
				if r.onlyStd && !isStd(dep) && !hasPrefix(dep, r.allowed) {
					bad = append(bad, p.ImportPath+" depends on "+dep+": only the standard library"+allowedText(r.allowed))
				}
			}
		}
	}
	return bad
}

func allowedText(allowed []string) string {
	if len(allowed) == 0 {
		return ""
	}
	return " and " + strings.Join(allowed, ", ")
}

func TestImportRules(t *testing.T) {
	pkgs := goList(t)
	if len(pkgs) < 5 {
		t.Fatalf("go list found %d packages; expected the whole module", len(pkgs))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// The checker must catch what it is for: a forbidden transitive dependency, a non-standard
// one in a pure package, and an import of cmd.
func TestViolationsAreFound(t *testing.T) {
	pkgs := []listed{
		{ImportPath: module + "/placement", Deps: []string{"sort", "github.com/hashicorp/consul/api"}},
		{ImportPath: module + "/hostd", Deps: []string{module + "/build"}},
		{ImportPath: module + "/schema", Deps: []string{"gopkg.in/yaml.v3", "strings"}},
		{ImportPath: module + "/sync", Deps: []string{module + "/cmd/gilliam-sync"}},
	}
	got := violations(pkgs)
	if len(got) != 3 {
		t.Fatalf("want 3 violations (placement, hostd, sync), got %d: %q", len(got), got)
	}
}
