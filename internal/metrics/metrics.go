package metrics

import (
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the families of one process. Every method is safe on a nil *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	info *prometheus.GaugeVec

	// sync
	buildDuration   *prometheus.HistogramVec
	pushToServing   *prometheus.HistogramVec
	rolloutDuration *prometheus.HistogramVec
	releases        *prometheus.CounterVec
	leader          prometheus.Gauge
	deploySteps     *prometheus.HistogramVec

	// gitwatch
	pollRounds *prometheus.CounterVec
	webhooks   *prometheus.CounterVec

	// consul, every daemon
	consulRequests *prometheus.CounterVec
	consulErrors   *prometheus.CounterVec

	// hostd
	instances    *prometheus.GaugeVec
	restarts     *prometheus.CounterVec
	pulls        *prometheus.CounterVec
	pullDuration prometheus.Histogram
	logStreams   prometheus.Gauge

	// router
	routerRequests *prometheus.CounterVec
	routerLatency  *prometheus.HistogramVec
}

// Buckets, in seconds.
var (
	// buildBuckets span a cached image lookup (50 ms) to a cold build (15 min).
	buildBuckets = []float64{0.05, 0.25, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900}
	// deployBuckets span a config-only deploy (1 s) to a slow roll-out (30 min).
	deployBuckets = []float64{1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800}
	// pullBuckets span a cached layer (10 ms) to a large image (5 min).
	pullBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	// routerBuckets span a local answer (0.5 ms) to the first-byte timeout (30 s).
	routerBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// New makes the families of one process, registered with the Go runtime's and the
// process's own collectors. daemon names the process in gilliam_build_info ("sync",
// "host", "router", "up").
func New(daemon string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg}
	f := promauto{reg}
	m.info = f.gaugeVec("gilliam_build_info", "Always 1: the daemon, its version and the Go version it was built with.", "daemon", "version", "goversion")
	m.buildDuration = f.histogramVec("gilliam_build_duration_seconds", "Time to make a service's image, by result: built (a build ran), cached (the registry had the image of its source), resolved (an image service's reference looked up), failed, superseded (a newer commit replaced it).", buildBuckets, "formation", "service", "result")
	m.pushToServing = f.histogramVec("gilliam_push_to_serving_seconds", "Time from a commit detected to its releases rolled out with every instance passing (the deploy timeline's detected to roll-out done).", deployBuckets, "formation")
	m.rolloutDuration = f.histogramVec("gilliam_rollout_duration_seconds", "Time from a roll-out's start to its end, by result: done, failed (reverted at its deadline), superseded (a newer release replaced it), abandoned (back to the release it replaced).", deployBuckets, "formation", "service", "result")
	m.releases = f.counterVec("gilliam_releases_total", "Releases written, by cause: push (a commit) or config (a config var change).", "formation", "cause")
	m.deploySteps = f.histogramVec("gilliam_deploy_step_seconds", "Each step of the deploy timeline: detected to build started (queue), build started to built (build), built to released (release), released to first instance passing (start), first passing to roll-out done (roll-out).", deployBuckets, "formation", "step")
	m.leader = f.gauge("gilliam_sync_leader", "1 while this sync daemon leads, else 0.")
	m.pollRounds = f.counterVec("gilliam_poll_rounds_total", "Polls of a repository's refs, by result: ok or error.", "result")
	m.webhooks = f.counterVec("gilliam_webhook_deliveries_total", "Webhook deliveries received, by forge and result: accepted, refused (bad signature, replay, unknown repository), invalid (not a hook payload, too large, wrong method).", "forge", "result")
	m.consulRequests = f.counterVec("gilliam_consul_requests_total", "HTTP requests to Consul, by API (kv, txn, health, catalog, agent, session, status).", "api")
	m.consulErrors = f.counterVec("gilliam_consul_request_errors_total", "HTTP requests to Consul that failed: no answer, or an answer of 500 or above.", "api")
	m.instances = f.gaugeVec("gilliam_instances", "Instances this host runs, by state (running, created, exited, pulling, failed, ...) and health (passing, warning, critical, unknown).", "host", "state", "health")
	m.restarts = f.counterVec("gilliam_instance_restarts_total", "Instances restarted by this host, by reason: crash (it exited) or unhealthy (its check stayed critical).", "host", "formation", "service", "reason")
	m.pulls = f.counterVec("gilliam_image_pulls_total", "Image pulls by this host, by result: ok or error.", "host", "result")
	m.pullDuration = f.histogram("gilliam_image_pull_duration_seconds", "Time to pull an image.", pullBuckets)
	m.logStreams = f.gauge("gilliam_log_streams", "Instance log requests being served by this host.")
	m.routerRequests = f.counterVec("gilliam_router_http_requests_total", "Requests the router answered, by formation, service and status class (2xx, 3xx, 4xx, 5xx); unknown host names count under formation \"\".", "formation", "service", "code")
	m.routerLatency = f.histogramVec("gilliam_router_http_request_duration_seconds", "Time from a request received to its response's headers sent, by formation and service.", routerBuckets, "formation", "service")
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version, goversion := "devel", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goversion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
	}
	m.info.WithLabelValues(daemon, version, goversion).Set(1)
	return m
}

type promauto struct{ reg *prometheus.Registry }

func (p promauto) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	p.reg.MustRegister(v)
	return v
}

func (p promauto) gauge(name, help string) prometheus.Gauge {
	v := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	p.reg.MustRegister(v)
	return v
}

func (p promauto) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	p.reg.MustRegister(v)
	return v
}

func (p promauto) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	p.reg.MustRegister(v)
	return v
}

func (p promauto) histogram(name, help string, buckets []float64) prometheus.Histogram {
	v := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
	p.reg.MustRegister(v)
	return v
}

// Handler serves the families in the Prometheus exposition format (nil: 404).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Register adds collectors of a package's own (the router's table and watch counters).
func (m *Metrics) Register(cs ...prometheus.Collector) {
	if m == nil {
		return
	}
	m.reg.MustRegister(cs...)
}

// Build records the time to make one service's image: result built, cached or failed.
func (m *Metrics) Build(formation, service, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.buildDuration.WithLabelValues(formation, service, result).Observe(d.Seconds())
}

// PushToServing records a commit's time from detected to served.
func (m *Metrics) PushToServing(formation string, d time.Duration) {
	if m == nil {
		return
	}
	m.pushToServing.WithLabelValues(formation).Observe(d.Seconds())
}

// DeployStep records one step of a deploy timeline (queue, build, release, start, rollout).
func (m *Metrics) DeployStep(formation, step string, d time.Duration) {
	if m == nil || d < 0 {
		return
	}
	m.deploySteps.WithLabelValues(formation, step).Observe(d.Seconds())
}

// Rollout records a roll-out's end: done, failed, superseded or abandoned.
func (m *Metrics) Rollout(formation, service, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.rolloutDuration.WithLabelValues(formation, service, result).Observe(d.Seconds())
}

// Releases counts releases written.
func (m *Metrics) Releases(formation, cause string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.releases.WithLabelValues(formation, cause).Add(float64(n))
}

// Leading sets the leader gauge.
func (m *Metrics) Leading(on bool) {
	if m == nil {
		return
	}
	m.leader.Set(map[bool]float64{true: 1}[on])
}

// PollRound counts a poll of a repository's refs.
func (m *Metrics) PollRound(err error) {
	if m == nil {
		return
	}
	m.pollRounds.WithLabelValues(okOrError(err)).Inc()
}

// Webhook counts a webhook delivery: accepted, refused or invalid.
func (m *Metrics) Webhook(forge, result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(forge, result).Inc()
}

// ConsulRequest counts a request to Consul's API and, when failed, an error.
func (m *Metrics) ConsulRequest(api string, failed bool) {
	if m == nil {
		return
	}
	m.consulRequests.WithLabelValues(api).Inc()
	if failed {
		m.consulErrors.WithLabelValues(api).Inc()
	}
}

// InstanceCount is one row of a host's instances: how many are in a state and health.
type InstanceCount struct {
	State, Health string
	N             int
}

// Instances sets a host's instance counts, dropping the rows no longer present.
func (m *Metrics) Instances(host string, counts []InstanceCount) {
	if m == nil {
		return
	}
	m.instances.DeletePartialMatch(prometheus.Labels{"host": host})
	for _, c := range counts {
		h := c.Health
		if h == "" {
			h = "unknown"
		}
		m.instances.WithLabelValues(host, c.State, h).Add(float64(c.N))
	}
}

// Restart counts an instance restarted: crash or unhealthy.
func (m *Metrics) Restart(host, formation, service, reason string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(host, formation, service, reason).Inc()
}

// Pull records an image pull.
func (m *Metrics) Pull(host string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.pulls.WithLabelValues(host, okOrError(err)).Inc()
	if err == nil {
		m.pullDuration.Observe(d.Seconds())
	}
}

// LogStream counts a log request served (+1 at its start, -1 at its end).
func (m *Metrics) LogStream(delta int) {
	if m == nil {
		return
	}
	m.logStreams.Add(float64(delta))
}

// RouterRequest records one request the router answered.
func (m *Metrics) RouterRequest(formation, service string, code int, d time.Duration) {
	if m == nil {
		return
	}
	m.routerRequests.WithLabelValues(formation, service, codeClass(code)).Inc()
	m.routerLatency.WithLabelValues(formation, service).Observe(d.Seconds())
}

func codeClass(code int) string {
	if code < 100 || code > 599 {
		return strconv.Itoa(code)
	}
	return strconv.Itoa(code/100) + "xx"
}

func okOrError(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
