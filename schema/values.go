package schema

import (
	"errors"
	"fmt"
	"math/big"
	pathpkg "path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The syntaxes of single values. Each has a pattern, shared by the parser below and the
// JSON Schema, so that an editor and gilliam-sync accept the same text; the parsers add
// what a pattern cannot say (ranges, precise messages).

const (
	labelPattern = `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	// A host name of at least two lowercase labels: shop.example.com.
	domainPattern  = `^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	envNamePattern = `^[A-Za-z_][A-Za-z0-9_]*$`
	// Go durations with a unit on every number; "0" alone is allowed. Go also accepts signs
	// and ".5s"; gilliam.yml keeps to the plain forms.
	durationPattern = `^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`
	sizePattern     = `^[0-9]{1,15}(\.[0-9]{1,6})?(Ki|Mi|Gi|Ti|K|M|G|T)?$`
	cpuPattern      = `^([0-9]{1,7}m|[0-9]{1,4}(\.[0-9]{1,3})?)$`
	processPattern  = `^[A-Za-z0-9._-]+$`
	httpPathPattern = `^/[!-~]*$` // printable ASCII, no spaces
	// An image reference as Docker reads it: [registry[:port]/]name[:tag][@digest].
	imagePattern = `^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(:[0-9]+)?/)?` +
		`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*` +
		`(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`
	// Constraints are "label=value", "label!=value" or "label~=regexp"; spaces around the
	// operator are allowed.
	constraintPattern = `^ *([A-Za-z0-9][A-Za-z0-9._/-]*) *(=|!=|~=) *(\S.*?) *$`
)

var (
	labelRE      = regexp.MustCompile(labelPattern)
	envNameRE    = regexp.MustCompile(envNamePattern)
	durationRE   = regexp.MustCompile(durationPattern)
	sizeRE       = regexp.MustCompile(sizePattern)
	cpuRE        = regexp.MustCompile(cpuPattern)
	processRE    = regexp.MustCompile(processPattern)
	httpPathRE   = regexp.MustCompile(httpPathPattern)
	domainRE     = regexp.MustCompile(domainPattern)
	imageRE      = regexp.MustCompile(imagePattern)
	constraintRE = regexp.MustCompile(constraintPattern)
)

// checkLabel reports why s is not a DNS label (RFC 1123): what formation and service
// names must be, since they end up in Consul service names and DNS.
func checkLabel(s string) error {
	if labelRE.MatchString(s) {
		return nil
	}
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 63:
		return fmt.Errorf("is %d characters long; the limit is 63", len(s))
	case strings.ToLower(s) != s && labelRE.MatchString(strings.ToLower(s)):
		return fmt.Errorf("must be lowercase: %s", code(strings.ToLower(s)))
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("contains %s; use only lowercase letters, digits and `-`", code(string(r)))
		}
	}
	return errors.New("must start and end with a letter or a digit")
}

// checkEnvName reports why s cannot be an environment variable name.
func checkEnvName(s string) error {
	if envNameRE.MatchString(s) {
		return nil
	}
	return errors.New("is not a valid variable name: use letters, digits and `_`, not starting with a digit")
}

// goTargetPattern is one package path of BP_GO_TARGETS: `.` or `./` and a path of letters,
// digits and `_ . / -`. The offline Go buildpack (build/builder/buildpacks/go/bin/build)
// applies the same rule before it hands each path to go build as one argument.
const goTargetPattern = `^\.(/[A-Za-z0-9_./-]*)?$`

var goTargetRE = regexp.MustCompile(goTargetPattern)

// CheckGoTargets reports why v, the value of BP_GO_TARGETS, is not a list of package paths
// separated by white space: a value such as `-toolexec=./x` would be a flag of go build.
func CheckGoTargets(v string) error {
	targets := strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' })
	if len(targets) == 0 {
		return errors.New("names no package: write package paths such as `.` or `./cmd/web`")
	}
	for _, t := range targets {
		if !goTargetRE.MatchString(t) || slices.Contains(strings.Split(t, "/"), "..") {
			return fmt.Errorf("%s is not a package path: write `.` or `./path`, with letters, digits and `_ . / -` only and no `..` (a value starting with `-` would be a flag of go build)", code(t))
		}
	}
	return nil
}

// parseDuration parses a Go duration that is not negative.
func parseDuration(s string) (time.Duration, error) {
	if strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%s is negative", code(s))
	}
	if !durationRE.MatchString(s) {
		return 0, fmt.Errorf("%s is not a duration: write a number and a unit, such as `500ms`, `10s`, `1m30s` or `72h`", code(s))
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s is too long a duration", code(s))
	}
	return d, nil
}

var sizeUnits = map[string]int64{
	"":  1,
	"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

// parseSize parses a number of bytes with an optional unit: decimal (K, M, G, T) or
// binary (Ki, Mi, Gi, Ti), as Kubernetes writes them. A fraction must come to whole bytes.
func parseSize(s string) (int64, error) {
	if !sizeRE.MatchString(s) {
		num := strings.TrimRight(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
		if unit := s[len(num):]; unit != "" && sizeRE.MatchString(num) {
			return 0, fmt.Errorf("%s has an unknown unit %s: use Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000)", code(s), code(unit))
		}
		return 0, fmt.Errorf("%s is not a size: write bytes with a unit, such as `256Mi`, `1Gi` or `500M`", code(s))
	}
	num := strings.TrimRight(s, "KMGTi")
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%s is not a size", code(s))
	}
	r.Mul(r, new(big.Rat).SetInt64(sizeUnits[s[len(num):]]))
	if !r.IsInt() {
		return 0, fmt.Errorf("%s is not a whole number of bytes", code(s))
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%s is too large", code(s))
	}
	return r.Num().Int64(), nil
}

// parseCPU parses CPU in millicores ("500m") or cores ("1", "0.5", "1.25").
func parseCPU(s string) (int64, error) {
	if !cpuRE.MatchString(s) {
		return 0, fmt.Errorf("%s is not a CPU amount: write cores such as `1` or `0.5`, or millicores such as `500m`", code(s))
	}
	var milli int64
	if digits, ok := strings.CutSuffix(s, "m"); ok {
		for _, c := range digits {
			milli = milli*10 + int64(c-'0')
		}
		return milli, nil
	}
	whole, frac, _ := strings.Cut(s, ".")
	for _, c := range whole + (frac + "000")[:3] {
		milli = milli*10 + int64(c-'0')
	}
	return milli, nil
}

// parseConstraint parses "key=value", "key!=value" or "key~=regexp".
func parseConstraint(s string) (Constraint, error) {
	m := constraintRE.FindStringSubmatch(s)
	if m == nil {
		return Constraint{}, fmt.Errorf("%s is not a constraint: write `label=value`, `label!=value` or `label~=regexp`", code(s))
	}
	c := Constraint{Key: m[1], Op: m[2], Value: m[3]}
	if c.Op == OpMatch {
		if _, err := regexp.Compile(c.Value); err != nil {
			return Constraint{}, fmt.Errorf("%s is not a valid regular expression: %s", code(c.Value), truncate(strings.TrimPrefix(err.Error(), "error parsing regexp: ")))
		}
	}
	return c, nil
}

// cleanRepoPath checks that p names a folder inside the repository and returns it cleaned,
// relative to the root ("." for the root itself).
func cleanRepoPath(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("must not be empty: use `.` for the repository root")
	case strings.ContainsRune(p, '\\'):
		return "", errors.New("must use `/` to separate folders")
	case strings.HasPrefix(p, "/"):
		return "", errors.New("must be relative to the repository root, not absolute")
	case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return "", errors.New("must not contain control characters")
	}
	clean := pathpkg.Clean(p)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%s is outside the repository", code(p))
	}
	return clean, nil
}

// checkImage reports why s is not an image reference.
func checkImage(s string) error {
	if len(s) > 512 || !imageRE.MatchString(s) {
		return fmt.Errorf("%s is not an image reference such as `redis:7`, `postgres:16-alpine` or `registry.example.com/team/app@sha256:...`", code(s))
	}
	return nil
}

// formatDuration writes d the short way people write it: "5m", not "5m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// formatSize writes a number of bytes with the largest unit that divides it.
func formatSize(b int64) string {
	for _, u := range []string{"Ti", "Gi", "Mi", "Ki", "T", "G", "M", "K"} {
		if m := sizeUnits[u]; b != 0 && b%m == 0 {
			return fmt.Sprintf("%d%s", b/m, u)
		}
	}
	return fmt.Sprint(b)
}
