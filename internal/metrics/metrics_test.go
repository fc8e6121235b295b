package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Every family is named by the Prometheus conventions, and a nil *Metrics records nothing
// without failing.
func TestFamiliesAndNil(t *testing.T) {
	var none *Metrics
	none.Build("f", "s", "built", time.Second)
	none.RouterRequest("f", "s", 200, time.Millisecond)
	none.Instances("h", nil)

	m := New("test")
	m.Build("shop", "web", "built", 3*time.Second)
	m.PushToServing("shop", 12*time.Second)
	m.DeployStep("shop", "build", time.Second)
	m.Rollout("shop", "web", "done", 8*time.Second)
	m.Releases("shop", "push", 2)
	m.Leading(true)
	m.PollRound(nil)
	m.PollRound(errors.New("down"))
	m.Webhook("gitea", "accepted")
	m.ConsulRequest("kv", true)
	m.Instances("h1", []InstanceCount{{State: "running", Health: "passing", N: 2}, {State: "exited", N: 1}})
	m.Instances("h1", []InstanceCount{{State: "running", Health: "passing", N: 3}}) // replaces
	m.Restart("h1", "shop", "web", "crash")
	m.Pull("h1", time.Second, nil)
	m.LogStream(1)
	m.RouterRequest("shop", "web", 503, 2*time.Millisecond)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`gilliam_build_info{daemon="test"`,
		`gilliam_build_duration_seconds_count{formation="shop",result="built",service="web"} 1`,
		`gilliam_push_to_serving_seconds_sum{formation="shop"} 12`,
		`gilliam_rollout_duration_seconds_count{formation="shop",result="done",service="web"} 1`,
		`gilliam_releases_total{cause="push",formation="shop"} 2`,
		`gilliam_sync_leader 1`,
		`gilliam_poll_rounds_total{result="error"} 1`,
		`gilliam_consul_request_errors_total{api="kv"} 1`,
		`gilliam_instances{health="passing",host="h1",state="running"} 3`,
		`gilliam_instance_restarts_total{formation="shop",host="h1",reason="crash",service="web"} 1`,
		`gilliam_router_http_requests_total{code="5xx",formation="shop",service="web"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
	if strings.Contains(body, `state="exited"`) {
		t.Error("a host's row no longer present is still exported")
	}
	for _, line := range strings.Split(body, "\n") {
		name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(line, "# HELP "), "# TYPE "), " ")
		if strings.HasPrefix(line, "# TYPE ") {
			kind := strings.Fields(line)[3]
			if !strings.HasPrefix(name, "gilliam_") {
				continue
			}
			if kind == "counter" && !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s does not end in _total", name)
			}
			if kind == "histogram" && !strings.HasSuffix(name, "_seconds") {
				t.Errorf("histogram %s is not in seconds", name)
			}
		}
	}
}

func TestConsulAPI(t *testing.T) {
	for path, want := range map[string]string{"/v1/kv/gilliam/x": "kv", "/v1/txn": "txn", "/v1/health/service/a": "health", "/v1/agent/check/pass/x": "agent", "/other": "other", "/v1/weird": "other"} {
		if got := consulAPI(path); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}
