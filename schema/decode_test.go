package schema

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// parse parses src as a gilliam.yml and returns its errors as lines without the file
// name: "4:5: services.web.scael: unknown field, did you mean `scale`?".
func parse(t *testing.T, src string) (*Formation, []string) {
	t.Helper()
	f, err := Parse("gilliam.yml", []byte(src))
	if err != nil {
		if _, ok := err.(ErrorList); !ok {
			t.Fatalf("error is a %T, want an ErrorList: %v", err, err)
		}
		if f != nil {
			t.Fatalf("a formation returned with errors")
		}
	}
	return f, lines(err)
}

// mustParse parses src and fails the test on any error.
func mustParse(t *testing.T, src string) *Formation {
	t.Helper()
	f, errs := parse(t, src)
	if errs != nil {
		t.Fatalf("unexpected errors:\n%s", strings.Join(errs, "\n"))
	}
	return f
}

func checkErrors(t *testing.T, src string, want []string) {
	t.Helper()
	_, got := parse(t, src)
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n got: %s\nwant: %s\nsource:\n%s", strings.Join(got, "\n      "), strings.Join(want, "\n      "), src)
	}
}

// Each case breaks one rule of a single value: its type or its syntax. Removing the rule
// from the decoder makes its case fail.
func TestValueErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"unknown field with a hint", "services:\n  web:\n    path: .\n    scael: 2\n",
			[]string{"4:5: services.web.scael: unknown field, did you mean `scale`?"}},
		{"unknown field hint ignores case", "services:\n  web:\n    path: .\n    Depends_On: []\n",
			[]string{"4:5: services.web.Depends_On: unknown field, did you mean `depends_on`?"}},
		{"unknown field lists the known ones", "services:\n  web:\n    path: .\n    resources: {disk: 1Gi}\n",
			[]string{"4:17: services.web.resources.disk: unknown field (known fields: cpu, memory)"}},
		{"unknown top-level field", "servics: {}\n",
			[]string{"1:1: missing required field `services`", "1:1: servics: unknown field, did you mean `services`?"}},
		{"x- keys only at the top level", "x-ok: 1\nservices:\n  web:\n    path: .\n    x-no: 1\n",
			[]string{"5:5: services.web.x-no: unknown field (known fields: type, path, image, process, command, ports, env, scale, check, resources, constraints, internal, read_only, web, depends_on, rollout, restart, volumes, release)"}},
		{"domains", "domains: [shop.example.com, Shop.example.com, localhost, shop.example.com]\nservices:\n  web:\n    path: .\n",
			[]string{
				"1:29: domains[1]: `Shop.example.com` is not a host name: lowercase labels of letters, digits and -, joined by dots, such as shop.example.com",
				"1:47: domains[2]: `localhost` is not a host name: lowercase labels of letters, digits and -, joined by dots, such as shop.example.com",
				"1:58: domains[3]: `shop.example.com` is listed twice",
			}},
		{"two web services, one internal", "services:\n  a:\n    path: .\n    web: true\n  b:\n    path: .\n    web: true\n    internal: true\n",
			[]string{
				"7:10: services.b.web: `a` is the web service already: mark one service `web: true`",
				"7:10: services.b.web: an internal service is never exposed: it cannot be the web service",
			}},
		{"missing services", "formation: shop\n",
			[]string{"1:1: missing required field `services`"}},
		{"root not a mapping", "just a string\n",
			[]string{"1:1: must be a mapping, not a string"}},
		{"key set twice", "services:\n  web:\n    path: .\n    path: web\n",
			[]string{"4:5: services.web.path: is already set at line 3"}},
		{"key not a string", "services:\n  web:\n    path: .\n    [a]: 1\n",
			[]string{"4:5: services.web: a key must be a plain string, not a list"}},
		{"string expected", "services:\n  web:\n    path: 12\n",
			[]string{"3:11: services.web.path: must be a string, not an integer; write it in quotes: \"12\""}},
		{"string expected, empty", "services:\n  web:\n    path:\n",
			[]string{"3:10: services.web.path: must be a string, not empty; write \"\" for an empty string"}},
		{"integer expected", "services:\n  web:\n    path: .\n    scale: two\n",
			[]string{"4:12: services.web.scale: must be an integer, not a string"}},
		{"integer quoted", "services:\n  web:\n    path: .\n    scale: \"2\"\n",
			[]string{"4:12: services.web.scale: must be an integer, not a string; remove the quotes"}},
		{"integer as octal", "services:\n  web:\n    path: .\n    scale: 010\n",
			[]string{"4:12: services.web.scale: `010` must be written as a plain decimal number"}},
		{"integer with underscores", "services:\n  web:\n    path: .\n    scale: 1_0\n",
			[]string{"4:12: services.web.scale: `1_0` must be written as a plain decimal number"}},
		{"integer too large", "services:\n  web:\n    path: .\n    scale: 99999999999999999999\n",
			[]string{"4:12: services.web.scale: must be an integer, not a number"}},
		{"scale negative", "services:\n  web:\n    path: .\n    scale: -1\n",
			[]string{"4:12: services.web.scale: must be between 0 and 1000"}},
		{"scale above the limit", "services:\n  web:\n    path: .\n    scale: 1001\n",
			[]string{"4:12: services.web.scale: must be between 0 and 1000"}},
		{"boolean expected", "services:\n  web:\n    path: .\n    internal: yes\n",
			[]string{"4:15: services.web.internal: must be true or false, not a string"}},
		{"list expected", "services:\n  web:\n    path: .\n    depends_on: db\n",
			[]string{"4:17: services.web.depends_on: must be a list, not a string"}},
		{"mapping expected", "services:\n  web: [path]\n",
			[]string{"2:8: services.web: must be a mapping, not a list"}},
		{"enum", "services:\n  web:\n    type: docker\n    path: .\n",
			[]string{"3:11: services.web.type: `docker` is not one of `buildpack`, `image`, `dockerfile`"}},
		{"enum with a hint", "services:\n  web:\n    type: Image\n    image: redis:7\n",
			[]string{"3:11: services.web.type: `Image` is not one of `buildpack`, `image`, `dockerfile`, did you mean `image`?"}},
		{"formation name", "formation: Shop\nservices:\n  web:\n    path: .\n",
			[]string{"1:12: formation: a formation name must be lowercase: `shop`"}},
		{"formation name empty", "formation: \"\"\nservices:\n  web:\n    path: .\n",
			[]string{"1:12: formation: a formation name must not be empty"}},
		{"service name", "services:\n  web_1:\n    path: .\n",
			[]string{"2:3: services.web_1: a service name contains `_`; use only lowercase letters, digits and `-`"}},
		{"service name too long", "services:\n  " + strings.Repeat("a", 64) + ":\n    path: .\n",
			[]string{"2:3: services." + strings.Repeat("a", 64) + ": a service name is 64 characters long; the limit is 63"}},
		{"service name ends with -", "services:\n  web-:\n    path: .\n",
			[]string{"2:3: services.web-: a service name must start and end with a letter or a digit"}},
		{"env name", "env:\n  MY-VAR: 1\nservices:\n  web:\n    path: .\n",
			[]string{"2:3: env.MY-VAR: is not a valid variable name: use letters, digits and `_`, not starting with a digit"}},
		{"env name with a space", "services:\n  web:\n    path: .\n    env: {\"A B\": 1}\n",
			[]string{"4:11: services.web.env[\"A B\"]: is not a valid variable name: use letters, digits and `_`, not starting with a digit"}},
		{"BP_GO_TARGETS a flag", "services:\n  web:\n    path: .\n    env:\n      BP_GO_TARGETS: -toolexec=./x.sh\n",
			[]string{"5:22: services.web.env.BP_GO_TARGETS: `-toolexec=./x.sh` is not a package path: write `.` or `./path`, with letters, digits and `_ . / -` only and no `..` (a value starting with `-` would be a flag of go build)"}},
		{"BP_GO_TARGETS a flag after a path", "env: {BP_GO_TARGETS: \". -a\"}\nservices:\n  web:\n    path: .\n",
			[]string{"1:22: env.BP_GO_TARGETS: `-a` is not a package path: write `.` or `./path`, with letters, digits and `_ . / -` only and no `..` (a value starting with `-` would be a flag of go build)"}},
		{"BP_GO_TARGETS a shell word", "services:\n  web:\n    path: .\n    env: {BP_GO_TARGETS: \"./$(id)\"}\n",
			[]string{"4:26: services.web.env.BP_GO_TARGETS: `./$(id)` is not a package path: write `.` or `./path`, with letters, digits and `_ . / -` only and no `..` (a value starting with `-` would be a flag of go build)"}},
		{"BP_GO_TARGETS out of the module", "services:\n  web:\n    path: .\n    env: {BP_GO_TARGETS: ./a/../../b}\n",
			[]string{"4:26: services.web.env.BP_GO_TARGETS: `./a/../../b` is not a package path: write `.` or `./path`, with letters, digits and `_ . / -` only and no `..` (a value starting with `-` would be a flag of go build)"}},
		{"env value a list", "services:\n  web:\n    path: .\n    env: {A: [1]}\n",
			[]string{"4:14: services.web.env.A: must be a value such as `info` or `8080`, not a list"}},
		{"env value empty", "services:\n  web:\n    path: .\n    env: {A: }\n",
			[]string{"4:14: services.web.env.A: must be a value such as `info` or `8080`, not empty; write \"\" for an empty string"}},
		{"path absolute", "services:\n  web:\n    path: /app\n",
			[]string{"3:11: services.web.path: must be relative to the repository root, not absolute"}},
		{"path escapes", "services:\n  web:\n    path: a/../../b\n",
			[]string{"3:11: services.web.path: `a/../../b` is outside the repository"}},
		{"path parent", "services:\n  web:\n    path: ..\n",
			[]string{"3:11: services.web.path: `..` is outside the repository"}},
		{"path backslash", "services:\n  web:\n    path: 'a\\b'\n",
			[]string{"3:11: services.web.path: must use `/` to separate folders"}},
		{"path empty", "services:\n  web:\n    path: ''\n",
			[]string{"3:11: services.web.path: must not be empty: use `.` for the repository root"}},
		{"path control character", "services:\n  web:\n    path: \"a\\tb\"\n",
			[]string{"3:11: services.web.path: must not contain control characters"}},
		{"image reference", "services:\n  db:\n    image: Redis:7\n",
			[]string{"3:12: services.db.image: `Redis:7` is not an image reference such as `redis:7`, `postgres:16-alpine` or `registry.example.com/team/app@sha256:...`"}},
		{"process name", "services:\n  web:\n    path: .\n    process: web server\n",
			[]string{"4:14: services.web.process: `web server` is not a process type such as `web` or `worker`"}},
		{"command empty", "services:\n  web:\n    path: .\n    command: []\n",
			[]string{"4:14: services.web.command: must not be empty; leave `command` out instead"}},
		{"command not strings", "services:\n  web:\n    path: .\n    command: [./server, {a: 1}]\n",
			[]string{"4:25: services.web.command[1]: must be a string, not a mapping"}},
		{"port zero", "services:\n  web:\n    path: .\n    ports: [0]\n",
			[]string{"4:13: services.web.ports[0]: must be between 1 and 65535"}},
		{"port too large", "services:\n  web:\n    path: .\n    ports: [65536]\n",
			[]string{"4:13: services.web.ports[0]: must be between 1 and 65535"}},
		{"port as a word", "services:\n  web:\n    path: .\n    ports: [http]\n",
			[]string{"4:13: services.web.ports[0]: must be a port number such as 8080 or a mapping such as {port: 8080, name: http}, not a string"}},
		{"port mapping without port", "services:\n  web:\n    path: .\n    ports: [{name: http}]\n",
			[]string{"4:13: services.web.ports[0]: missing required field `port`"}},
		{"port mapping unknown key", "services:\n  web:\n    path: .\n    ports: [{port: 80, protocol: udp}]\n",
			[]string{"4:24: services.web.ports[0].protocol: unknown field (known fields: port, name)"}},
		{"port name", "services:\n  web:\n    path: .\n    ports: [{port: 80, name: HTTP}]\n",
			[]string{"4:30: services.web.ports[0].name: a port name must be lowercase: `http`"}},
		{"duration without unit", "services:\n  web:\n    path: .\n    rollout: {min_healthy: 30}\n",
			[]string{"4:28: services.web.rollout.min_healthy: `30` needs a unit, such as `30s` for seconds"}},
		{"duration unknown unit", "services:\n  web:\n    path: .\n    rollout: {min_healthy: 1d}\n",
			[]string{"4:28: services.web.rollout.min_healthy: `1d` is not a duration: write a number and a unit, such as `500ms`, `10s`, `1m30s` or `72h`"}},
		{"duration negative", "services:\n  web:\n    path: .\n    rollout: {min_healthy: -1s}\n",
			[]string{"4:28: services.web.rollout.min_healthy: `-1s` is negative"}},
		{"duration overflows", "services:\n  web:\n    path: .\n    rollout: {min_healthy: 9999999999h}\n",
			[]string{"4:28: services.web.rollout.min_healthy: `9999999999h` is too long a duration"}},
		{"duration below its minimum", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {interval: 500ms}\n",
			[]string{"5:23: services.web.check.interval: must be at least 1s"}},
		{"preview ttl below its minimum", "services:\n  web:\n    path: .\npreviews: {ttl: 59s}\n",
			[]string{"4:17: previews.ttl: must be at least 1m"}},
		{"size unit", "services:\n  web:\n    path: .\n    resources: {memory: 1GB}\n",
			[]string{"4:25: services.web.resources.memory: `1GB` has an unknown unit `GB`: use Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000)"}},
		{"size not a number", "services:\n  web:\n    path: .\n    resources: {memory: lots}\n",
			[]string{"4:25: services.web.resources.memory: `lots` is not a size: write bytes with a unit, such as `256Mi`, `1Gi` or `500M`"}},
		{"size not whole bytes", "services:\n  web:\n    path: .\n    resources: {memory: 1.5Ki1}\n",
			[]string{"4:25: services.web.resources.memory: `1.5Ki1` is not a size: write bytes with a unit, such as `256Mi`, `1Gi` or `500M`"}},
		{"size below its minimum", "services:\n  web:\n    path: .\n    resources: {memory: 5Mi}\n",
			[]string{"4:25: services.web.resources.memory: must be at least 6Mi"}},
		{"cpu", "services:\n  web:\n    path: .\n    resources: {cpu: 2 cores}\n",
			[]string{"4:22: services.web.resources.cpu: `2 cores` is not a CPU amount: write cores such as `1` or `0.5`, or millicores such as `500m`"}},
		{"cpu zero", "services:\n  web:\n    path: .\n    resources: {cpu: 0}\n",
			[]string{"4:22: services.web.resources.cpu: must be at least `1m`"}},
		{"constraint syntax", "services:\n  web:\n    path: .\n    constraints: [zone]\n",
			[]string{"4:19: services.web.constraints[0]: `zone` is not a constraint: write `label=value`, `label!=value` or `label~=regexp`"}},
		{"constraint regexp", "services:\n  web:\n    path: .\n    constraints: ['disk~=[ssd']\n",
			[]string{"4:19: services.web.constraints[0]: `[ssd` is not a valid regular expression: missing closing ]: `[ssd`"}},
		{"check http path", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {http: health}\n",
			[]string{"5:19: services.web.check.http: `health` is not a URL path: it starts with / and has no spaces"}},
		{"check tcp false", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {tcp: false}\n",
			[]string{"5:18: services.web.check.tcp: only `tcp: true` has a meaning; write `check: none` for no check"}},
		{"check as a word", "services:\n  web:\n    path: .\n    check: off\n",
			[]string{"4:12: services.web.check: `off` is not a check: write {http: /healthz}, {tcp: true} or `none`"}},
		{"check as a number", "services:\n  web:\n    path: .\n    check: 1\n",
			[]string{"4:12: services.web.check: must be a mapping such as {http: /healthz} or {tcp: true}, or `none`, not an integer"}},
		{"merge of a scalar", "services:\n  web:\n    <<: 1\n    path: .\n",
			[]string{"3:9: services.web: `<<` merges a mapping or a list of mappings, not an integer"}},
		{"merge of a list of scalars", "services:\n  web:\n    <<: [1]\n    path: .\n",
			[]string{"3:10: services.web: `<<` merges a mapping or a list of mappings, not a list of an integer"}},
		{"custom tag", "services:\n  web:\n    path: !secret x\n",
			[]string{"3:11: services.web.path: must be a string, not a value tagged `!secret`; write it in quotes: \"x\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

// The defaults, as a user who writes the least gets them.
func TestDefaults(t *testing.T) {
	f := mustParse(t, "services:\n  web:\n    path: .\n    ports: [8080]\n  db:\n    image: redis:7\n    ports: [6379]\n  worker:\n    path: worker\n")
	if f.Name != "" {
		t.Errorf("Name = %q, want empty: the caller applies DefaultName", f.Name)
	}
	want := &Service{
		Name: "web", Type: TypeBuildpack, Path: ".", Process: DefaultProcess,
		Ports: []Port{{Port: 8080}}, Env: map[string]string{}, Scale: DefaultScale,
		Check:     Check{Type: CheckTCP, Interval: 10 * time.Second, Timeout: 2 * time.Second, Grace: 10 * time.Second},
		Resources: Resources{CPU: 250, Memory: 256 << 20},
		Rollout:   Rollout{MaxParallel: 1, MinHealthy: 10 * time.Second, Deadline: 5 * time.Minute},
		Restart:   Restart{MinBackoff: time.Second, MaxBackoff: time.Minute},
	}
	if got := f.Services["web"]; !reflect.DeepEqual(got, want) {
		t.Errorf("web:\n got %+v\nwant %+v", got, want)
	}
	db := f.Services["db"]
	if db.Type != TypeImage || db.Process != "" || db.Path != "" {
		t.Errorf("db: type %q process %q path %q; want an image service with neither process nor path", db.Type, db.Process, db.Path)
	}
	if db.Check.Type != CheckTCP {
		t.Errorf("db: check %q, want tcp on its port", db.Check.Type)
	}
	if w := f.Services["worker"]; w.Check.Type != CheckNone || len(w.Ports) != 0 {
		t.Errorf("worker: check %q, want none: it has no port", w.Check.Type)
	}
	wantPreviews := Previews{Enabled: false, TTL: 72 * time.Hour, Services: map[string]PreviewOverride{}}
	if !reflect.DeepEqual(f.Previews, wantPreviews) {
		t.Errorf("previews = %+v, want %+v", f.Previews, wantPreviews)
	}
	if f.Env == nil {
		t.Error("formation Env is nil; want an empty map")
	}
}

// A value written equal to its documented default gives what leaving it out gives.
func TestWrittenDefaultsEqualLeftOut(t *testing.T) {
	left := mustParse(t, "services:\n  web:\n    path: .\n    ports: [80]\n")
	written := mustParse(t, `services:
  web:
    type: buildpack
    path: .
    process: web
    ports: [80]
    scale: 1
    check: {tcp: true, interval: 10s, timeout: 2s, grace: 10s}
    resources: {cpu: 250m, memory: 256Mi}
    internal: false
    rollout: {max_parallel: 1, min_healthy: 10s, deadline: 5m}
    restart: {min_backoff: 1s, max_backoff: 1m}
previews: {enabled: false, ttl: 72h}
`)
	if !reflect.DeepEqual(left, written) {
		t.Errorf("left out:\n%+v\nwritten:\n%+v", left.Services["web"], written.Services["web"])
	}
}

// testdata/full.yml sets every field to something other than its default: each leaf
// field of the Go types must come out different from what a minimal file gives. A field
// of the Go types that no key decodes into, or a key that decodes into the wrong field,
// fails this test.
func TestEveryFieldDecoded(t *testing.T) {
	full, err := ParseFile("testdata/full.yml")
	if err != nil {
		t.Fatal(err)
	}
	minimal := mustParse(t, "services:\n  web:\n    path: .\n")

	fullValues, minValues := map[string][]string{}, map[string][]string{}
	for _, s := range full.Services {
		leafValues(reflect.ValueOf(*s), "Service", fullValues)
	}
	leafValues(reflect.ValueOf(*minimal.Services["web"]), "Service", minValues)
	full.Services, minimal.Services = nil, nil
	leafValues(reflect.ValueOf(*full), "Formation", fullValues)
	leafValues(reflect.ValueOf(*minimal), "Formation", minValues)

	var unset []string
	for _, p := range slices.Concat(leafPaths(reflect.TypeFor[Service](), "Service"), leafPaths(reflect.TypeFor[Formation](), "Formation")) {
		if p == "Formation.Services" || p == "Service.Name" {
			continue // the map of services, and the name, which is its key
		}
		if !slices.ContainsFunc(fullValues[p], func(v string) bool { return !slices.Contains(minValues[p], v) }) {
			unset = append(unset, p)
		}
	}
	if len(unset) > 0 {
		t.Errorf("fields testdata/full.yml leaves at their defaults (set them there, or the decoder misses them): %v", unset)
	}
}

// leafPaths lists the leaf fields of the type t: Service.Check.Interval, Service.Ports.Port.
func leafPaths(t reflect.Type, prefix string) []string {
	switch {
	case t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return leafPaths(t.Elem(), prefix)
	case t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Struct:
		return leafPaths(t.Elem(), prefix+"[]")
	case t.Kind() == reflect.Map && t.Elem().Kind() == reflect.Pointer:
		return []string{prefix}
	case t.Kind() == reflect.Struct:
		var paths []string
		for f := range t.Fields() {
			paths = append(paths, leafPaths(f.Type, prefix+"."+f.Name)...)
		}
		return paths
	}
	return []string{prefix}
}

// leafValues collects the values of v's leaf fields by leafPaths' names, as text.
func leafValues(v reflect.Value, prefix string, out map[string][]string) {
	switch {
	case v.Kind() == reflect.Pointer:
		if !v.IsNil() {
			leafValues(v.Elem(), prefix, out)
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		for i := range v.Len() {
			leafValues(v.Index(i), prefix, out)
		}
	case v.Kind() == reflect.Map && v.Type().Elem().Kind() == reflect.Struct:
		for _, k := range v.MapKeys() {
			leafValues(v.MapIndex(k), prefix+"[]", out)
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			leafValues(v.Field(i), prefix+"."+v.Type().Field(i).Name, out)
		}
	default:
		out[prefix] = append(out[prefix], fmt.Sprint(v.Interface()))
	}
}

func TestFullFile(t *testing.T) {
	f, err := ParseFile("testdata/full.yml")
	if err != nil {
		t.Fatal(err)
	}
	web := f.Services["web"]
	if web.Path != "services/web" {
		t.Errorf("path %q, want it cleaned to services/web", web.Path)
	}
	wantEnv := map[string]string{"SHARED": "formation", "OVERRIDDEN": "service", "WORKERS": "4"}
	if !reflect.DeepEqual(web.Env, wantEnv) {
		t.Errorf("env = %v, want the formation env under the service env: %v", web.Env, wantEnv)
	}
	if f.Env["OVERRIDDEN"] != "formation" {
		t.Errorf("formation env changed: %v", f.Env)
	}
	if web.Resources != (Resources{CPU: 1500, Memory: 1 << 30}) {
		t.Errorf("resources through an alias = %+v", web.Resources)
	}
	wantConstraints := []Constraint{{"zone", OpEqual, "eu"}, {"disk", OpNotEqual, "hdd"}, {"rack", OpMatch, "^r[0-9]+$"}}
	if !reflect.DeepEqual(web.Constraints, wantConstraints) {
		t.Errorf("constraints = %+v", web.Constraints)
	}
	if web.Check != (Check{Type: CheckHTTP, Path: "/healthz?full=1", Interval: 15 * time.Second, Timeout: 3 * time.Second, Grace: time.Minute}) {
		t.Errorf("check = %+v", web.Check)
	}
	if p, ok := web.PrimaryPort(); !ok || p.Port != 8080 {
		t.Errorf("primary port = %v, %v", p, ok)
	}
	if o := f.Previews.Services["web"]; o.Scale == nil || *o.Scale != 1 || o.Env["PREVIEW"] != "true" {
		t.Errorf("preview override = %+v", o)
	}
	if db := f.Services["db"]; !reflect.DeepEqual(db.Command, []string{"postgres", "-c", "fsync=off"}) || db.Process != "" {
		t.Errorf("db command %q process %q", db.Command, db.Process)
	}
}

// Environment values are kept as written: 1.10 stays 1.10, not 1.1.
func TestEnvValuesAsWritten(t *testing.T) {
	f := mustParse(t, "services:\n  web:\n    path: .\n    env:\n      VERSION: 1.10\n      DEBUG: true\n      HEX: 0x1F\n      DATE: 2024-01-02\n      EMPTY: \"\"\n")
	want := map[string]string{"VERSION": "1.10", "DEBUG": "true", "HEX": "0x1F", "DATE": "2024-01-02", "EMPTY": ""}
	got := f.Services["web"].Env
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env = %v, want %v", got, want)
	}
}

func TestTypeInference(t *testing.T) {
	f := mustParse(t, "services:\n  a:\n    image: redis:7\n  b:\n    path: b\n  c:\n    type: dockerfile\n    path: c\n  d:\n    path: d\n    command: [./d]\n")
	for name, want := range map[string][2]string{
		"a": {TypeImage, ""}, "b": {TypeBuildpack, "web"}, "c": {TypeDockerfile, ""}, "d": {TypeBuildpack, ""},
	} {
		s := f.Services[name]
		if s.Type != want[0] || s.Process != want[1] {
			t.Errorf("%s: type %q process %q, want %q %q", name, s.Type, s.Process, want[0], want[1])
		}
	}
}

func TestMergeKeys(t *testing.T) {
	f := mustParse(t, `x-base: &base
  scale: 3
  env: {A: base}
x-more: &more
  scale: 5
  internal: true
services:
  web:
    <<: [*base, *more]
    path: .
    env: {B: web}
`)
	web := f.Services["web"]
	if web.Scale != 3 || !web.Internal {
		t.Errorf("scale %d internal %v: want 3 from the first merged mapping, true from the second", web.Scale, web.Internal)
	}
	if !reflect.DeepEqual(web.Env, map[string]string{"B": "web"}) {
		t.Errorf("env = %v: a key written in the mapping replaces the merged one whole", web.Env)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "g.yml", Line: 3, Column: 5, Path: "services.web", Msg: "bad"}, "g.yml:3:5: services.web: bad"},
		{Error{File: "g.yml", Line: 3, Msg: "bad"}, "g.yml:3: bad"},
		{Error{File: "g.yml", Msg: "bad"}, "g.yml: bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// Errors come out in the order of the file whatever the order they are found in, and
// the same input always gives the same output: maps are never iterated to report.
func TestErrorOrderIsStable(t *testing.T) {
	src := "services:\n"
	for _, name := range []string{"m", "c", "x", "a", "q", "b", "z", "k"} {
		src += "  " + name + ":\n    scale: -1\n    depends_on: [nope]\n"
	}
	_, first := parse(t, src)
	if len(first) != 24 {
		t.Fatalf("%d errors, want 24:\n%s", len(first), strings.Join(first, "\n"))
	}
	if !slices.IsSortedFunc(first, func(a, b string) int { return lineOf(a) - lineOf(b) }) {
		t.Errorf("not in file order:\n%s", strings.Join(first, "\n"))
	}
	for range 20 {
		if _, again := parse(t, src); !slices.Equal(again, first) {
			t.Fatalf("order changed between runs:\n%s\nthen:\n%s", strings.Join(first, "\n"), strings.Join(again, "\n"))
		}
	}
}

func lineOf(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func TestPathKeys(t *testing.T) {
	p := path("services").key("web").key("ports").index(0).key("name")
	if p != "services.web.ports[0].name" {
		t.Errorf("path = %q", p)
	}
	if got := path("env").key("A B"); got != `env["A B"]` {
		t.Errorf("path = %q", got)
	}
	long := path("services").key(strings.Repeat("x", 1000))
	if len(long) > 100 {
		t.Errorf("a long key is not cut in paths: %d bytes", len(long))
	}
}
