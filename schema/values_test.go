package schema

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "1": 1, "1024": 1024, "1K": 1000, "1Ki": 1024, "256Mi": 256 << 20, "1M": 1e6,
		"1G": 1e9, "2Gi": 2 << 30, "1T": 1e12, "1Ti": 1 << 40, "1.5Gi": 3 << 29, "0.5Ki": 512,
	}
	for s, want := range good {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	bad := map[string]string{
		"":                 "is not a size",
		"1MB":              "unknown unit `MB`",
		"1mi":              "unknown unit `mi`",
		"1k":               "unknown unit `k`",
		"-1Mi":             "is not a size",
		"1.5":              "not a whole number of bytes",
		"0.1Ki":            "not a whole number of bytes",
		"1e3":              "is not a size",
		"1 Mi":             "is not a size",
		"999999999999Ti":   "too large",
		"1234567890123456": "is not a size",
	}
	for s, want := range bad {
		if _, err := parseSize(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseSize(%q) error = %v; want one saying %q", s, err, want)
		}
	}
}

func TestParseCPU(t *testing.T) {
	good := map[string]int64{"1": 1000, "0.5": 500, "1.25": 1250, "1.001": 1001, "500m": 500, "1m": 1, "0": 0, "2.5": 2500, "16": 16000}
	for s, want := range good {
		if got, err := parseCPU(s); err != nil || got != want {
			t.Errorf("parseCPU(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "1.0001", "0.5m", "m", "-1", "1 core", ".5", "1e3", "12345"} {
		if _, err := parseCPU(s); err == nil {
			t.Errorf("parseCPU(%q) accepted", s)
		}
	}
}

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{"0": 0, "0s": 0, "10s": 10 * time.Second, "1m30s": 90 * time.Second, "1.5h": 90 * time.Minute, "500ms": 500 * time.Millisecond, "72h": 72 * time.Hour, "1µs": time.Microsecond, "1us": time.Microsecond}
	for s, want := range good {
		if got, err := parseDuration(s); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "10", "1d", "-1s", "+1s", ".5s", "1.s", "1 s", "s", "1h 30m"} {
		if _, err := parseDuration(s); err == nil {
			t.Errorf("parseDuration(%q) accepted", s)
		}
	}
}

func TestParseConstraint(t *testing.T) {
	good := map[string]Constraint{
		"zone=eu":            {"zone", OpEqual, "eu"},
		"zone!=us":           {"zone", OpNotEqual, "us"},
		"disk~=^ssd":         {"disk", OpMatch, "^ssd"},
		" zone = eu ":        {"zone", OpEqual, "eu"},
		"a=b=c":              {"a", OpEqual, "b=c"},
		"node.kind/x=y z":    {"node.kind/x", OpEqual, "y z"},
		"gpu~=nvidia|amd":    {"gpu", OpMatch, "nvidia|amd"},
		"kernel!=5.10-amd64": {"kernel", OpNotEqual, "5.10-amd64"},
	}
	for s, want := range good {
		if got, err := parseConstraint(s); err != nil || got != want {
			t.Errorf("parseConstraint(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "zone", "=eu", "zone=", "zone<eu", "zone~=(", "!zone=eu", "zone=\neu", "zone\t=eu"} {
		if _, err := parseConstraint(s); err == nil {
			t.Errorf("parseConstraint(%q) accepted", s)
		}
	}
}

func TestCleanRepoPath(t *testing.T) {
	good := map[string]string{".": ".", "./": ".", "a": "a", "a/b/": "a/b", "./a//b": "a/b", "a/../b": "b", "a/..": ".", "...": "..."}
	for p, want := range good {
		if got, err := cleanRepoPath(p); err != nil || got != want {
			t.Errorf("cleanRepoPath(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
	for _, p := range []string{"", "/", "/a", "..", "../a", "a/../..", "a\\b", "a\x00b", "a\nb"} {
		if _, err := cleanRepoPath(p); err == nil {
			t.Errorf("cleanRepoPath(%q) accepted", p)
		}
	}
}

func TestCheckImage(t *testing.T) {
	for _, s := range []string{
		"redis", "redis:7", "redis:7-alpine", "library/redis", "postgres:16.2",
		"ghcr.io/acme/app:v1.2.3", "127.0.0.1:5000/gilliam/app", "localhost:5000/a/b:c",
		"registry.example.com/team/app@sha256:" + sha, "app:tag@sha256:" + sha, "a__b/c-d.e",
	} {
		if err := checkImage(s); err != nil {
			t.Errorf("checkImage(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "Redis", "redis:", ":7", "redis:7 ", "redis@sha256:abc", "-redis", "redis/", "a//b", "http://redis", strings.Repeat("a", 600)} {
		if err := checkImage(s); err == nil {
			t.Errorf("checkImage(%q) accepted", s)
		}
	}
}

func TestCheckLabel(t *testing.T) {
	for _, s := range []string{"a", "web", "web-2", "2fa", strings.Repeat("a", 63), "a-b-c"} {
		if err := checkLabel(s); err != nil {
			t.Errorf("checkLabel(%q): %v", s, err)
		}
	}
	bad := map[string]string{
		"":                      "must not be empty",
		strings.Repeat("a", 64): "64 characters long",
		"Web":                   "must be lowercase: `web`",
		"web_2":                 "contains `_`",
		"wéb":                   "contains `é`",
		"-web":                  "start and end",
		"web-":                  "start and end",
		"web.api":               "contains `.`",
	}
	for s, want := range bad {
		if err := checkLabel(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkLabel(%q) = %v; want an error saying %q", s, err, want)
		}
	}
}

func TestCheckEnvName(t *testing.T) {
	for _, s := range []string{"A", "_", "PATH", "my_var", "A1"} {
		if err := checkEnvName(s); err != nil {
			t.Errorf("checkEnvName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "1A", "A-B", "A B", "A.B", "É"} {
		if err := checkEnvName(s); err == nil {
			t.Errorf("checkEnvName(%q) accepted", s)
		}
	}
}

func TestFormat(t *testing.T) {
	durations := map[time.Duration]string{0: "0s", 10 * time.Second: "10s", 5 * time.Minute: "5m", 72 * time.Hour: "72h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s", 500 * time.Millisecond: "500ms"}
	for d, want := range durations {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	sizes := map[int64]string{0: "0", 1: "1", 1024: "1Ki", 256 << 20: "256Mi", 1 << 30: "1Gi", 1000: "1K", 1500: "1500", 6 << 20: "6Mi"}
	for b, want := range sizes {
		if got := formatSize(b); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", b, got, want)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"type", "path", "image", "scale", "depends_on", "internal", "env", "ports"}
	for typo, want := range map[string]string{
		"scael": "scale", "Scale": "scale", "dependson": "depends_on", "depends-on": "depends_on",
		"evn": "env", "port": "ports", "imgae": "image", "internl": "internal",
		"volumes": "", "x": "", "replicas": "", "": "",
	} {
		if got := closest(typo, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", typo, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"scale", "scale", 0}, {"scael", "scale", 1}, {"kitten", "sitting", 3}, {"ab", "ba", 1}, {"abc", "ca", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
