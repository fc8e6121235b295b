package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// What people are told of a deploy, end to end with the built binary: two host daemons
// serve their instances' logs, `gilliam-sync logs` merges them (control characters
// escaped), follows them across a roll-out, and keeps a backlog of more than 10,000 lines
// though the instances that wrote them are gone; `releases --history` and `status` show
// each release's deploy timeline; the sync daemon, both hosts and a router are scraped and
// their families checked.
func TestLogsMetricsAndTimeline(t *testing.T) {
	parallel(t, 33*time.Second)
	c := newCluster(t)
	c.bin = testenv.RaceBinary(t) // its daemons under the race detector (docs/testing.md)
	image := c.testImage()
	token := filepath.Join(t.TempDir(), "logs-token")
	if err := os.WriteFile(token, []byte("s3cret-logs-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	// Two host daemons, as binaries, each with its metrics and its logs endpoint.
	var hosts []string
	hostMetrics := map[string]string{}
	for _, name := range []string{"obs-a", "obs-b"} {
		id := uniqueID(name)
		hosts = append(hosts, id)
		metrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		hostMetrics[id] = metrics
		t.Cleanup(func() { c.docker.RemoveContainers(t, hostd.LabelHost, id) }) // after the daemon stops
		testenv.Start(t, c.consul.Env(), c.bin, "host", "--id", id, "--advertise", "127.0.0.1", "--data", t.TempDir(),
			"--resync", "1s", "--metrics", metrics, "--logs-listen", "127.0.0.1:0", "--logs-token-file", token, "--log-format", "json")
	}
	syncMetrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	hooks := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	routerAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	routerMetrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	testenv.Start(t, c.consul.Env(), c.bin, "router", "--listen", routerAddr, "--metrics", routerMetrics, "--log-format", "json")

	const f = "obs"
	file := func(msg string) map[string]string {
		return map[string]string{"gilliam.yml": imageFormation(f, image, "MESSAGE: "+msg, "LOG_LINES: \"3500\"", "LOG_CONTROL: \"1\"")}
	}
	c.repo.Commit(file("one"), "one")
	c.sync("a", nil, "--metrics", syncMetrics, "--webhooks-listen", hooks, "--logs-listen", "127.0.0.1:0", "--logs-token-file", token)
	testenv.Eventually(t, 90*time.Second, "3 instances answering one", func() bool { return c.countAnswering(f+"-web", "one") == 3 })
	serving1 := time.Since(start)

	// The backlog, merged from both hosts, control characters escaped.
	out := c.cli("logs", f, "--token-file", token, "-n", "20000")
	for _, h := range hosts {
		if !strings.Contains(out, " "+h+" | ") {
			t.Errorf("no line from host %s in:\n%s", h, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x00") || !strings.Contains(out, `\x1b[31mred\x1b[0m and a NUL \x00 from one`) {
		t.Errorf("control characters not escaped:\n%q", out)
	}
	if n := strings.Count(c.cli("logs", f, "--token-file", token, "-n", "20"), "\n"); n != 20 {
		t.Errorf("-n 20 printed %d lines", n)
	}
	// Without the token, a host answers 401.
	if resp, err := http.Get(c.hostStatusLogs(t, hosts[0]) + "/v1/logs?formation=" + f); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a logs request without the token: %v %v", resp, err)
	}

	// Follow, then roll out a new release: its instances' lines come on the same stream.
	follow := c.followLogs(t, f, token)
	c.repo.Commit(file("two"), "two")
	testenv.Eventually(t, 2*time.Minute, "3 instances answering two", func() bool { return c.countAnswering(f+"-web", "two") == 3 })
	testenv.Eventually(t, 30*time.Second, "the followed stream to show the new release's lines", func() bool {
		return strings.Contains(follow.String(), "and a NUL \\x00 from two")
	})

	// The backlog outlives the instances: release one's lines, archived by the hosts when
	// its containers went, are still there, over 10,000 lines in all.
	testenv.Eventually(t, 30*time.Second, "release one's containers gone", func() bool {
		return len(running(t, c.docker, hosts[0]))+len(running(t, c.docker, hosts[1])) == 3
	})
	backlog := c.cli("logs", f, "--token-file", token, "-n", "30000")
	lines := strings.Count(backlog, "\n")
	if lines < 10_000 || !strings.Contains(backlog, "line 1 of 3500, message one") {
		t.Errorf("backlog after the roll-out: %d lines, release one's first lines there: %v", lines, strings.Contains(backlog, "message one"))
	}
	if !sortedByTime(backlog) {
		t.Errorf("the backlog is not in time order")
	}
	oneInstance := strings.Fields(strings.Split(backlog, "\n")[0])[1]
	if only := c.cli("logs", f, "web", "--instance", oneInstance, "--token-file", token, "-n", "5"); strings.Count(only, " "+oneInstance+" ") != 5 {
		t.Errorf("--instance %s:\n%s", oneInstance, only)
	}

	// The deploy timeline, in the history and the status.
	var history string
	testenv.Eventually(t, 30*time.Second, "both releases' timelines done", func() bool {
		history = c.cli("releases", f, "--history")
		return strings.Count(history, " done ") == 2
	})
	if !strings.Contains(history, "deploy timeline:") {
		t.Errorf("history:\n%s", history)
	}
	status := c.cli("status", f)
	if !strings.Contains(status, "deploy of ") || !strings.Contains(status, "serving push after") {
		t.Errorf("status shows no timeline:\n%s", status)
	}

	// Traffic through the router, a refused webhook, then every daemon's families.
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, "http://"+routerAddr+"/", nil)
		req.Host = f + ".localhost"
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	if resp, err := http.Post("http://"+hooks+"/hooks/gitea", "application/json", strings.NewReader(`{"repository":{"clone_url":"http://nowhere.example/x.git"}}`)); err == nil {
		resp.Body.Close()
	}
	want := map[string][]string{
		syncMetrics: {
			`gilliam_build_info{daemon="sync"}`, `gilliam_sync_leader`,
			`gilliam_build_duration_seconds{formation="obs",service="web",result="resolved"}`,
			`gilliam_releases_total{formation="obs",cause="push"}`,
			`gilliam_push_to_serving_seconds{formation="obs"}`,
			`gilliam_rollout_duration_seconds{formation="obs",service="web",result="done"}`,
			`gilliam_deploy_step_seconds{formation="obs",step="rollout"}`,
			`gilliam_poll_rounds_total{result="ok"}`,
			`gilliam_webhook_deliveries_total{forge="gitea",result="refused"}`,
			`gilliam_consul_requests_total{api="kv"}`,
		},
		routerMetrics: {
			`gilliam_build_info{daemon="router"}`,
			`gilliam_router_http_requests_total{formation="obs",service="web",code="2xx"}`,
			`gilliam_router_http_request_duration_seconds{formation="obs",service="web"}`,
			`gilliam_router_routes`, `gilliam_consul_requests_total{api="health"}`,
		},
	}
	for _, h := range hosts {
		want[hostMetrics[h]] = []string{
			`gilliam_build_info{daemon="host"}`,
			fmt.Sprintf(`gilliam_instances{host=%q,state="running"}`, h),
			`gilliam_consul_requests_total{api="agent"}`,
		}
	}
	// The hosts share one engine: the first to need the image pulls it, the other finds it.
	pulled := 0
	for _, h := range hosts {
		if hasMetric(scrape(t, hostMetrics[h]), fmt.Sprintf(`gilliam_image_pulls_total{host=%q,result="ok"}`, h)) {
			pulled++
		}
	}
	if pulled == 0 {
		t.Errorf("no host counted its pull")
	}
	var report strings.Builder
	for addr, families := range want {
		got := scrape(t, addr)
		for _, w := range families {
			if !hasMetric(got, w) {
				t.Errorf("%s: no %s", addr, w)
			}
		}
		for name, mf := range got {
			for _, m := range mf.Metric {
				for _, l := range m.Label {
					if l.GetName() == "instance" || l.GetName() == "release" || l.GetName() == "commit" {
						t.Errorf("%s: %s has a label %s", addr, name, l.GetName())
					}
				}
			}
		}
		if h := got["gilliam_push_to_serving_seconds"]; h != nil {
			for _, m := range h.Metric {
				fmt.Fprintf(&report, "gilliam_push_to_serving_seconds: %d deploys, sum %.2fs\n", m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum())
			}
		}
	}
	testenv.Report(t, "observability", fmt.Sprintf("logs, metrics and the deploy timeline, 2 hosts, 3 instances, 2 releases (3500 lines each at start):\n"+
		"first release serving %s after start; backlog after the roll-out %d lines (-n 30000)\n%s%s",
		serving1.Round(time.Second), lines, report.String(), timelineRows(history)))
}

// hostStatusLogs is the logs URL a host wrote in its status.
func (c *cluster) hostStatusLogs(t *testing.T, host string) string {
	t.Helper()
	var url string
	testenv.Eventually(t, 30*time.Second, "host "+host+" to write its logs URL", func() bool {
		st, err := c.store.HostStatus(t.Context(), host)
		if err == nil && st != nil {
			url = st.Logs
		}
		return url != ""
	})
	return url
}

// followLogs runs `gilliam-sync logs FORMATION -f -n 0` until the test ends.
func (c *cluster) followLogs(t *testing.T, formation, token string) *lockedOutput {
	t.Helper()
	cmd := exec.Command(c.bin, "logs", formation, "-f", "-n", "0", "--token-file", token)
	cmd.Env = append(cmd.Environ(), c.consul.Env()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := &lockedOutput{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.add(sc.Text() + "\n")
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	return out
}

type lockedOutput struct {
	mu stdsync.Mutex
	b  strings.Builder
}

func (l *lockedOutput) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sortedByTime says whether the lines of `gilliam-sync logs` are in time order.
func sortedByTime(out string) bool {
	var times []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		times = append(times, strings.Fields(l)[0])
	}
	return sort.StringsAreSorted(times)
}

// scrape reads a daemon's /metrics.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return families
}

// hasMetric says whether a family has a metric with the labels of want, written
// name{label="value",...} (a subset of its labels).
func hasMetric(families map[string]*dto.MetricFamily, want string) bool {
	name, rest, _ := strings.Cut(want, "{")
	mf := families[name]
	if mf == nil {
		return false
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			labels[k] = strings.Trim(v, `"`)
		}
	}
	for _, m := range mf.Metric {
		ok := true
		for k, v := range labels {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			ok = ok && found
		}
		if ok {
			return true
		}
	}
	return false
}

// timelineRows is the timeline part of `releases --history`.
func timelineRows(history string) string {
	_, rows, _ := strings.Cut(history, "deploy timeline:\n")
	return rows
}
