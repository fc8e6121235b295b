package router

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/follow"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The registration conventions of hostd (hostd/register.go) the router reads: instances
// carry the tag TagInstance, their formation and service in meta, and the tag TagInternal
// when internal.
const (
	TagInstance   = "gilliam"
	TagInternal   = "internal"
	MetaFormation = "formation"
	MetaService   = "service"
)

// Stats are the router's counters, read by Router.Stats and the metrics page.
type Stats struct {
	// StaleRestarts counts blocking queries that ran past their wait and were restarted.
	StaleRestarts atomic.Uint64
	// WatchErrors counts blocking queries that failed.
	WatchErrors atomic.Uint64
	// TableSwaps counts routing tables swapped in.
	TableSwaps atomic.Uint64
	// Requests, Retries and BadGateway count requests, requests sent again to another
	// instance (their connection failed before a byte was written), and 502/504 answers.
	Requests, Retries, BadGateway atomic.Uint64
	lastContact                   atomic.Int64 // unix nanoseconds of the last answer from Consul
}

func (s *Stats) contact(t time.Time) { s.lastContact.Store(t.UnixNano()) }

// LastContact is when Consul last answered a watch.
func (s *Stats) LastContact() time.Time {
	if n := s.lastContact.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// watcher keeps what Consul says: the instances of every gilliam service and the routes
// documents. One follower lists the services (catalog), one follows each service's health,
// one follows routes/ in KV. Every change rebuilds the table.
type watcher struct {
	client     *api.Client
	store      *state.Store
	wait       time.Duration
	staleAfter time.Duration
	minDelay   time.Duration
	log        *slog.Logger
	stats      *Stats
	rebuild    func(instances []Instance, routes []*state.Routes)

	buildMu   sync.Mutex
	mu        sync.Mutex
	instances map[string][]Instance // by Consul service name
	routes    []*state.Routes
	running   map[string]context.CancelFunc
	wg        sync.WaitGroup
}

func (w *watcher) run(ctx context.Context) {
	w.instances = map[string][]Instance{}
	w.running = map[string]context.CancelFunc{}
	w.wg.Add(2)
	go func() { defer w.wg.Done(); w.follower("routes", w.fetchRoutes).Run(ctx) }()
	go func() { defer w.wg.Done(); w.follower("catalog", w.fetchCatalog(ctx)).Run(ctx) }()
	<-ctx.Done()
	w.wg.Wait()
}

// follower is a blocking query of the router's, its calls counted in Stats.
func (w *watcher) follower(name string, fetch func(context.Context, uint64, time.Duration) (uint64, error)) *follow.Follower {
	return &follow.Follower{Name: name, Wait: w.wait, StaleAfter: w.staleAfter, MinDelay: w.minDelay,
		Log: w.log, Fetch: fetch, Changed: w.changed,
		OnStale:   func() { w.stats.StaleRestarts.Add(1) },
		OnError:   func() { w.stats.WatchErrors.Add(1) },
		OnContact: w.stats.contact,
	}
}

// changed builds a table from what the watches hold now. Builds are one at a time, each
// from a snapshot taken inside: two watches answering together cannot swap in an older
// snapshot after a newer one.
func (w *watcher) changed() {
	w.buildMu.Lock()
	defer w.buildMu.Unlock()
	w.mu.Lock()
	var all []Instance
	for _, in := range w.instances {
		all = append(all, in...)
	}
	routes := w.routes
	w.mu.Unlock()
	w.rebuild(all, routes)
}

func (w *watcher) fetchRoutes(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
	routes, next, err := w.store.WatchRoutes(ctx, index, wait)
	if err != nil {
		return 0, err
	}
	w.mu.Lock()
	w.routes = routes
	w.mu.Unlock()
	return next, nil
}

// fetchCatalog lists the services and starts a health follower for each gilliam service
// that has none, and stops those of services gone from the catalog.
func (w *watcher) fetchCatalog(parent context.Context) func(context.Context, uint64, time.Duration) (uint64, error) {
	return func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		services, meta, err := w.client.Catalog().Services(q)
		if err != nil {
			return 0, err
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for name, tags := range services {
			if _, ok := w.running[name]; ok || !hasTag(tags, TagInstance) {
				continue
			}
			sctx, cancel := context.WithCancel(parent)
			w.running[name] = cancel
			w.wg.Add(1)
			go func() { defer w.wg.Done(); w.follower("health "+name, w.fetchHealth(name)).Run(sctx) }()
		}
		for name, cancel := range w.running {
			if _, ok := services[name]; !ok {
				cancel()
				delete(w.running, name)
				delete(w.instances, name)
			}
		}
		// A new service's follower rebuilds the table when it first answers; a service
		// gone is gone from the table when this answer's changed() rebuilds it.
		return meta.LastIndex, nil
	}
}

// fetchHealth reads every instance of one service with its health; passing means every
// check, the node's included, passes.
func (w *watcher) fetchHealth(name string) func(context.Context, uint64, time.Duration) (uint64, error) {
	return func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		entries, meta, err := w.client.Health().Service(name, TagInstance, false, q)
		if err != nil {
			return 0, err
		}
		instances := make([]Instance, 0, len(entries))
		for _, e := range entries {
			s := e.Service
			if names.InstallationOfTags(s.Tags) != w.store.Installation() {
				continue // another installation on the same Consul may run a formation of this name
			}
			addr := s.Address
			if addr == "" {
				addr = e.Node.Address
			}
			instances = append(instances, Instance{
				ID: s.ID, Formation: s.Meta[MetaFormation], Service: s.Meta[MetaService],
				Internal: hasTag(s.Tags, TagInternal),
				Addr:     net.JoinHostPort(addr, strconv.Itoa(s.Port)),
				Passing:  e.Checks.AggregatedStatus() == api.HealthPassing,
			})
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if ctx.Err() != nil { // the service left the catalog: its cancel ran under mu
			return 0, ctx.Err()
		}
		w.instances[name] = instances
		return meta.LastIndex, nil
	}
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if t == tag {
			return true
		}
	}
	return false
}
