package schema

import (
	"reflect"
	"testing"
)

// Each case breaks one rule that relates values to one another. Removing the rule from
// validate.go makes its case fail.
func TestRules(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"at least one service", "services: {}\n",
			[]string{"1:1: services: a formation needs at least one service"}},
		{"buildpack needs path", "services:\n  web:\n    ports: [80]\n",
			[]string{"2:3: services.web: a buildpack service needs `path`, the folder to build (`.` for the repository root)"}},
		{"dockerfile needs path", "services:\n  web:\n    type: dockerfile\n",
			[]string{"2:3: services.web: a dockerfile service needs `path`, the folder to build (`.` for the repository root)"}},
		{"image needs image", "services:\n  db:\n    type: image\n",
			[]string{"2:3: services.db: an image service needs `image`, the image to run"}},
		{"image has no path", "services:\n  db:\n    image: redis:7\n    path: db\n",
			[]string{"4:11: services.db.path: an image service is not built: leave `path` out, or set `type: buildpack` or `type: dockerfile`"}},
		{"image has no process", "services:\n  db:\n    image: redis:7\n    process: web\n",
			[]string{"4:14: services.db.process: `process` picks a buildpack launch process; an image service sets `command` instead"}},
		{"buildpack has no image", "services:\n  web:\n    type: buildpack\n    path: .\n    image: redis:7\n",
			[]string{"5:12: services.web.image: a buildpack service is built from `path` and runs no `image`; set `type: image` to run an image"}},
		{"dockerfile has no process", "services:\n  web:\n    type: dockerfile\n    path: .\n    process: web\n",
			[]string{"5:14: services.web.process: `process` picks a buildpack launch process; a dockerfile service sets `command` instead"}},
		{"process or command", "services:\n  web:\n    path: .\n    process: web\n    command: [./web]\n",
			[]string{"4:14: services.web.process: set `process` or `command`, not both"}},
		{"port listed twice", "services:\n  web:\n    path: .\n    ports: [80, 81, 80]\n",
			[]string{"4:21: services.web.ports[2]: port 80 is already listed as ports[0]"}},
		{"port listed twice, both forms", "services:\n  web:\n    path: .\n    ports: [80, {port: 80, name: http}]\n",
			[]string{"4:17: services.web.ports[1]: port 80 is already listed as ports[0]"}},
		{"port name given twice", "services:\n  web:\n    path: .\n    ports: [{port: 80, name: a}, {port: 81, name: a}]\n",
			[]string{"4:51: services.web.ports[1].name: the name `a` is already given to ports[0]"}},
		{"http check needs a port", "services:\n  web:\n    path: .\n    check: {http: /}\n",
			[]string{"4:5: services.web.check: an HTTP check needs a port to check: add `ports`, or write `check: none`"}},
		{"tcp check needs a port", "services:\n  web:\n    path: .\n    check: {tcp: true}\n",
			[]string{"4:5: services.web.check: a TCP check needs a port to check: add `ports`, or write `check: none`"}},
		{"a written check needs a port", "services:\n  web:\n    path: .\n    check: {grace: 1m}\n",
			[]string{"4:5: services.web.check: a TCP check needs a port to check: add `ports`, or write `check: none`"}},
		{"http or tcp", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {http: /, tcp: true}\n",
			[]string{"5:27: services.web.check.tcp: a check is either `http` or `tcp`, not both"}},
		{"timeout within interval", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {timeout: 11s}\n",
			[]string{"5:22: services.web.check.timeout: the timeout (11s) must not be longer than the interval (10s)"}},
		{"interval shorter than the default timeout", "services:\n  web:\n    path: .\n    ports: [80]\n    check: {interval: 1s}\n",
			[]string{"5:23: services.web.check.interval: the timeout (2s) must not be longer than the interval (1s)"}},
		{"unknown dependency", "services:\n  web:\n    path: .\n    depends_on: [dbb]\n  db:\n    image: redis:7\n",
			[]string{"4:18: services.web.depends_on[0]: unknown service `dbb`, did you mean `db`?"}},
		{"depends on itself", "services:\n  web:\n    path: .\n    depends_on: [web]\n",
			[]string{"4:18: services.web.depends_on[0]: a service cannot depend on itself"}},
		{"dependency listed twice", "services:\n  web:\n    path: .\n    depends_on: [db, db]\n  db:\n    image: redis:7\n",
			[]string{"4:22: services.web.depends_on[1]: `db` is listed twice"}},
		{"dependency cycle of two", "services:\n  a:\n    path: a\n    depends_on: [b]\n  b:\n    path: b\n    depends_on: [a]\n",
			[]string{"7:18: services.b.depends_on[0]: dependency cycle: b -> a -> b"}},
		{"dependency cycle of three", "services:\n  a:\n    path: a\n    depends_on: [c]\n  b:\n    path: b\n    depends_on: [a]\n  c:\n    path: c\n    depends_on: [b]\n",
			[]string{"7:18: services.b.depends_on[0]: dependency cycle: b -> a -> c -> b"}},
		{"two cycles", "services:\n  a:\n    path: a\n    depends_on: [b, c]\n  b:\n    path: b\n    depends_on: [a]\n  c:\n    path: c\n    depends_on: [a]\n",
			[]string{"7:18: services.b.depends_on[0]: dependency cycle: b -> a -> b", "10:18: services.c.depends_on[0]: dependency cycle: c -> a -> c"}},
		{"deadline after min_healthy", "services:\n  web:\n    path: .\n    rollout: {min_healthy: 1m, deadline: 1m}\n",
			[]string{"4:42: services.web.rollout.deadline: the deadline (1m) must be longer than min_healthy (1m)"}},
		{"default deadline after min_healthy", "services:\n  web:\n    path: .\n    rollout: {min_healthy: 6m}\n",
			[]string{"4:28: services.web.rollout.min_healthy: the deadline (5m) must be longer than min_healthy (6m)"}},
		{"max_backoff at least min_backoff", "services:\n  web:\n    path: .\n    restart: {min_backoff: 10s, max_backoff: 5s}\n",
			[]string{"4:46: services.web.restart.max_backoff: max_backoff (5s) must be at least min_backoff (10s)"}},
		{"default max_backoff at least min_backoff", "services:\n  web:\n    path: .\n    restart: {min_backoff: 2m}\n",
			[]string{"4:28: services.web.restart.min_backoff: max_backoff (1m) must be at least min_backoff (2m)"}},
		{"preview override of an unknown service", "services:\n  web:\n    path: .\npreviews:\n  services:\n    wbe: {scale: 0}\n",
			[]string{"6:5: previews.services.wbe: unknown service, did you mean `web`?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

// What the rules must not refuse. The JSON Schema must accept these too
// (TestSchemaAcceptsWhatParseAccepts).
var allowed = map[string]string{
	"scale 0":                        "services:\n  web:\n    path: .\n    scale: 0\n",
	"no port, no check":              "services:\n  worker:\n    path: .\n",
	"no port, check none":            "services:\n  worker:\n    path: .\n    check: none\n",
	"check none with a port":         "services:\n  web:\n    path: .\n    ports: [80]\n    check: none\n",
	"timeout equal to interval":      "services:\n  web:\n    path: .\n    ports: [80]\n    check: {interval: 2s, timeout: 2s}\n",
	"grace 0 and min_healthy 0":      "services:\n  web:\n    path: .\n    ports: [80]\n    check: {grace: 0s}\n    rollout: {min_healthy: 0s}\n",
	"equal backoffs":                 "services:\n  web:\n    path: .\n    restart: {min_backoff: 5s, max_backoff: 5s}\n",
	"a diamond of dependencies":      "services:\n  a:\n    path: a\n    depends_on: [b, c]\n  b:\n    path: b\n    depends_on: [d]\n  c:\n    path: c\n    depends_on: [d]\n  d:\n    image: redis:7\n",
	"buildpack with command":         "services:\n  web:\n    path: .\n    command: [./web, --port, \"8080\"]\n",
	"dockerfile with command":        "services:\n  web:\n    type: dockerfile\n    path: .\n    command: [./web]\n",
	"image with command":             "services:\n  db:\n    image: redis:7\n    command: [redis-server]\n",
	"image with registry and digest": "services:\n  db:\n    image: 127.0.0.1:5000/team/db@sha256:" + sha + "\n",
	"preview scale 0":                "services:\n  web:\n    path: .\npreviews:\n  enabled: true\n  services:\n    web: {scale: 0}\n",
	"names of digits":                "formation: \"2024\"\nservices:\n  \"1\":\n    path: .\n",
	"path with dots inside":          "services:\n  web:\n    path: a/./b/../c\n",
	"empty x- key":                   "x-nothing:\nservices:\n  web:\n    path: .\n",
	"document markers":               "---\nservices:\n  web:\n    path: .\n...\n",
	"byte order mark":                "\ufeffservices:\n  web:\n    path: .\n",
	"windows line ends":              "services:\r\n  web:\r\n    path: .\r\n",
	"BP_GO_TARGETS package paths":    "services:\n  web:\n    path: .\n    env: {BP_GO_TARGETS: \". ./cmd/web ./tools/...\"}\n",
}

func TestRulesAllow(t *testing.T) {
	for name, src := range allowed {
		t.Run(name, func(t *testing.T) { mustParse(t, src) })
	}
}

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestStartOrder(t *testing.T) {
	f := mustParse(t, "services:\n  web:\n    path: .\n    depends_on: [cache, api]\n  api:\n    path: api\n    depends_on: [db]\n  db:\n    image: postgres:16\n  cache:\n    image: redis:7\n  admin:\n    path: admin\n")
	want := []string{"admin", "db", "api", "cache", "web"}
	if got := f.StartOrder(); !reflect.DeepEqual(got, want) {
		t.Errorf("StartOrder() = %v, want %v", got, want)
	}
	if got := f.ServiceNames(); !reflect.DeepEqual(got, []string{"admin", "api", "cache", "db", "web"}) {
		t.Errorf("ServiceNames() = %v", got)
	}
}

func TestPrimaryPort(t *testing.T) {
	f := mustParse(t, "services:\n  web:\n    path: .\n    ports: [{port: 8080, name: http}, 9090]\n  worker:\n    path: w\n")
	if p, ok := f.Services["web"].PrimaryPort(); !ok || p != (Port{8080, "http"}) {
		t.Errorf("web: %v %v", p, ok)
	}
	if _, ok := f.Services["worker"].PrimaryPort(); ok {
		t.Error("worker has a primary port")
	}
}

// The web service is the one marked web: true, else the one named web unless internal.
func TestWebService(t *testing.T) {
	for _, c := range []struct {
		yml, want string
	}{
		{"services:\n  web:\n    path: .\n  api:\n    path: .\n", "web"},
		{"services:\n  web:\n    path: .\n  api:\n    path: .\n    web: true\n", "api"},
		{"services:\n  web:\n    path: .\n    internal: true\n", ""},
		{"services:\n  api:\n    path: .\n", ""},
	} {
		f, err := Parse("gilliam.yml", []byte(c.yml))
		if err != nil {
			t.Fatalf("%s: %v", c.yml, err)
		}
		if got := f.WebService(); got != c.want {
			t.Errorf("%s: web service %q, want %q", c.yml, got, c.want)
		}
	}
}
