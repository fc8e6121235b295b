package schema

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// docs/gilliam-yml.md documents every key in a reference table row
// "| `services.<name>.scale` | type | default | meaning |". Each key of the format has its
// row, each row is a key of the format, and where the format has a default the row shows
// it: the reference cannot fall behind the code.
func TestDocsReferenceEveryKey(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs/gilliam-yml.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([^`]+)` \\|([^|]*)\\|([^|]*)\\|")
	rows := map[string]string{} // key -> default cell
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		if _, dup := rows[m[1]]; dup {
			t.Errorf("docs: %s documented twice", m[1])
		}
		rows[m[1]] = m[3]
	}

	var s map[string]any
	if err := json.Unmarshal(JSONSchema(), &s); err != nil {
		t.Fatal(err)
	}
	keys := documentedKeys(s, "")
	if len(keys) < 35 {
		t.Fatalf("found %d keys in the schema; the walk is broken", len(keys))
	}
	for _, key := range sortedKeys(keys) {
		cell, ok := rows[key]
		if !ok {
			t.Errorf("docs/gilliam-yml.md has no reference row for `%s`", key)
			continue
		}
		if def, ok := keys[key]["default"]; ok {
			if want := "`" + fmt.Sprint(def) + "`"; !strings.Contains(cell, want) {
				t.Errorf("docs: `%s` shows default %q; the format's default is %s", key, strings.TrimSpace(cell), want)
			}
		}
	}
	for key := range rows {
		if _, ok := keys[key]; !ok {
			t.Errorf("docs/gilliam-yml.md documents `%s`, which the format does not have", key)
		}
	}
}

// documentedKeys lists the keys below s by their reference names: services.<name>.ports[].port.
func documentedKeys(s map[string]any, prefix string) map[string]map[string]any {
	keys := map[string]map[string]any{}
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	props, _ := s["properties"].(map[string]any)
	for k, v := range props {
		sub := v.(map[string]any)
		keys[join(k)] = sub
		for kk, vv := range documentedKeys(sub, join(k)) {
			keys[kk] = vv
		}
	}
	if sub, ok := s["additionalProperties"].(map[string]any); ok {
		for kk, vv := range documentedKeys(sub, prefix+".<name>") {
			keys[kk] = vv
		}
	}
	if sub, ok := s["items"].(map[string]any); ok {
		for kk, vv := range documentedKeys(sub, prefix+"[]") {
			keys[kk] = vv
		}
	}
	for _, b := range asList(s["anyOf"]) {
		for kk, vv := range documentedKeys(b.(map[string]any), prefix) {
			keys[kk] = vv
		}
	}
	return keys
}

// The defaults the reference's prose and the Go constants give are the format's: a
// change of a Default constant must reach the tables (and so the docs) through fields.go.
func TestDefaultsInSchemaMatchConstants(t *testing.T) {
	var s map[string]any
	json.Unmarshal(JSONSchema(), &s)
	keys := documentedKeys(s, "")
	want := map[string]any{
		"services.<name>.scale":                DefaultScale,
		"services.<name>.check.interval":       formatDuration(DefaultCheckInterval),
		"services.<name>.check.timeout":        formatDuration(DefaultCheckTimeout),
		"services.<name>.check.grace":          formatDuration(DefaultCheckGrace),
		"services.<name>.resources.cpu":        fmt.Sprintf("%dm", DefaultCPU),
		"services.<name>.resources.memory":     formatSize(DefaultMemory),
		"services.<name>.rollout.max_parallel": DefaultMaxParallel,
		"services.<name>.rollout.min_healthy":  formatDuration(DefaultMinHealthy),
		"services.<name>.rollout.deadline":     formatDuration(DefaultDeadline),
		"services.<name>.restart.min_backoff":  formatDuration(DefaultMinBackoff),
		"services.<name>.restart.max_backoff":  formatDuration(DefaultMaxBackoff),
		"services.<name>.release.timeout":      formatDuration(DefaultReleaseTimeout),
		"previews.ttl":                         formatDuration(DefaultPreviewTTL),
		"previews.enabled":                     false,
		"services.<name>.internal":             false,
		"services.<name>.read_only":            false,
		"services.<name>.web":                  false,
	}
	var withDefault []string
	for k, v := range keys {
		if _, ok := v["default"]; ok {
			withDefault = append(withDefault, k)
		}
	}
	sort.Strings(withDefault)
	for _, k := range withDefault {
		if _, ok := want[k]; !ok {
			t.Errorf("%s has a default this test does not know", k)
		}
	}
	for k, w := range want {
		if got := keys[k]["default"]; fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s: default %v in the schema, %v in types.go", k, got, w)
		}
	}
	if !slices.Contains(withDefault, "services.<name>.scale") {
		t.Error("walk found no defaults")
	}
}
