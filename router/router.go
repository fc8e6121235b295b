package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Defaults, after Heroku's router for the timeouts.
const (
	DefaultDomain           = "localhost"
	DefaultFirstByteTimeout = 30 * time.Second
	DefaultRollingTimeout   = 55 * time.Second
	DefaultDialTimeout      = 3 * time.Second
	DefaultWatchWait        = 60 * time.Second
	DefaultStaleAfter       = 15 * time.Second
	DefaultMinDelay         = 20 * time.Millisecond
	// RefusedWait is how long a request whose every instance refused the connection
	// waits for a newer table listing others before it is answered 502.
	RefusedWait = time.Second
)

// Config is a router's configuration; zero fields take the defaults above.
type Config struct {
	Consul *api.Client
	// Prefix is the KV prefix of gilliam-sync's state (state.DefaultPrefix when empty): the
	// routes documents are under it.
	Prefix string
	// Domain is the domain every formation gets a name under.
	Domain string
	// FirstByteTimeout bounds the wait for the response's headers once the request is
	// sent; RollingTimeout the wait for each further read of the response body.
	FirstByteTimeout, RollingTimeout time.Duration
	// DialTimeout bounds a connection to an instance; a failed one is retried elsewhere.
	DialTimeout time.Duration
	// WatchWait is the wait of each blocking query; one that has not answered StaleAfter
	// past it is stale, restarted, counted and logged. MinDelay spaces a watch's queries.
	WatchWait, StaleAfter, MinDelay time.Duration
	// Logger gets the router's own events; AccessLog one line per request (nil: none).
	Logger, AccessLog *slog.Logger
	// OnSwap, when set, is called with each table swapped in (tests and benchmarks).
	OnSwap func(*Table)
	// Metrics records requests and their latency by formation and service, and gets the
	// router's table and watch figures (nil: none).
	Metrics *metrics.Metrics
}

func (c *Config) defaults() {
	if c.Domain == "" {
		c.Domain = DefaultDomain
	}
	c.Domain = NormalizeHost(c.Domain)
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.FirstByteTimeout, DefaultFirstByteTimeout)
	def(&c.RollingTimeout, DefaultRollingTimeout)
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.WatchWait, DefaultWatchWait)
	def(&c.StaleAfter, DefaultStaleAfter)
	def(&c.MinDelay, DefaultMinDelay)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Router routes requests by host name to the passing instances of services. It is
// stateless: any number of routers may follow the same Consul.
type Router struct {
	cfg       Config
	table     atomic.Pointer[Table]
	stats     Stats
	proxy     *httputil.ReverseProxy
	transport *http.Transport
	problems  string // the last table's Problems, joined: logged when they change
	mu        sync.Mutex
	ready     chan struct{}
	readyOnce sync.Once
}

// New returns a router; Run follows Consul, and the router serves HTTP as a Handler.
func New(cfg Config) (*Router, error) {
	if cfg.Consul == nil {
		return nil, fmt.Errorf("router: no consul client")
	}
	cfg.defaults()
	r := &Router{cfg: cfg, ready: make(chan struct{})}
	r.transport = &http.Transport{
		Proxy:                 nil, // instances are reached directly, never through $HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.FirstByteTimeout,
		ExpectContinueTimeout: time.Second,
		// Responses pass through as the instance encoded them, for what the client asked.
		DisableCompression: true,
	}
	r.proxy = &httputil.ReverseProxy{
		Rewrite: r.rewrite,
		Transport: &balancer{base: r.transport, rolling: cfg.RollingTimeout, stats: &r.stats,
			table: r.Table, refusedWait: RefusedWait},
		ErrorHandler:   r.proxyError,
		ModifyResponse: modifyResponse,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		BufferPool:     bufferPool{},
	}
	r.table.Store(BuildTable(cfg.Domain, nil, nil, time.Now()))
	r.registerMetrics()
	return r, nil
}

// registerMetrics gives the router's own figures (gilliam_router_*) to its Metrics.
func (r *Router) registerMetrics() {
	if r.cfg.Metrics == nil {
		return
	}
	s := &r.stats
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	r.cfg.Metrics.Register(
		gauge("gilliam_router_routes", "Host names in the routing table.", func() float64 { return float64(r.Table().Len()) }),
		gauge("gilliam_router_table_age_seconds", "Seconds since the routing table was built.", func() float64 { return time.Since(r.Table().Built).Seconds() }),
		gauge("gilliam_router_consul_contact_age_seconds", "Seconds since Consul last answered a watch (-1: never).", func() float64 {
			if lc := s.LastContact(); !lc.IsZero() {
				return time.Since(lc).Seconds()
			}
			return -1
		}),
		counter("gilliam_router_watch_stale_total", "Blocking queries that ran past their wait and were restarted.", &s.StaleRestarts),
		counter("gilliam_router_watch_errors_total", "Blocking queries that failed.", &s.WatchErrors),
		counter("gilliam_router_table_swaps_total", "Routing tables swapped in.", &s.TableSwaps),
		counter("gilliam_router_requests_total", "Requests received.", &s.Requests),
		counter("gilliam_router_retries_total", "Requests sent again to another instance after a failed connection.", &s.Retries),
		counter("gilliam_router_bad_gateway_total", "Requests answered 502 or 504.", &s.BadGateway),
	)
}

// Run follows Consul until ctx ends, swapping in a new table at every change.
func (r *Router) Run(ctx context.Context) error {
	w := &watcher{
		client: r.cfg.Consul, store: state.NewStore(r.cfg.Consul, r.cfg.Prefix),
		wait: r.cfg.WatchWait, staleAfter: r.cfg.StaleAfter, minDelay: r.cfg.MinDelay,
		log: r.cfg.Logger, stats: &r.stats, rebuild: r.rebuild,
	}
	r.cfg.Logger.Info("router following consul", "domain", r.cfg.Domain)
	w.run(ctx)
	r.transport.CloseIdleConnections()
	return ctx.Err()
}

// rebuild builds a table and swaps it in.
func (r *Router) rebuild(instances []Instance, routes []*state.Routes) {
	t := BuildTable(r.cfg.Domain, instances, routes, time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.table.Store(t)
	r.stats.TableSwaps.Add(1)
	if p := strings.Join(t.Problems, "; "); p != r.problems {
		r.problems = p
		for _, msg := range t.Problems {
			r.cfg.Logger.Error("route refused", "problem", msg)
		}
	}
	r.readyOnce.Do(func() { close(r.ready) })
	if r.cfg.OnSwap != nil {
		r.cfg.OnSwap(t)
	}
}

// Table is the routing table in use.
func (r *Router) Table() *Table { return r.table.Load() }

// Ready is closed once the first table built from Consul is in use.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Stats are the router's counters.
func (r *Router) Stats() *Stats { return &r.stats }

// Domain is the domain formations are named under.
func (r *Router) Domain() string { return r.cfg.Domain }

// bufferPool keeps ReverseProxy's 32 KB copy buffers: without it every request allocates
// (and clears) one.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
