package router

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

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

// errStale is the cause of a blocking query cancelled because it ran past its wait by more
// than the stale margin: Consul (or a proxy, or the network) stopped answering.
var errStale = errors.New("blocking query ran past its wait: watch stale")

// follower runs one blocking query in a loop with the discipline of hostd/watch.go and
// consul-template: the index of each answer goes into the next query; an index that goes
// backwards starts over from 0; an answer with the same index is dropped; calls are at
// least minDelay apart; errors back off with jitter and start again from index 0. Each call
// gets a deadline of its wait plus staleAfter: a call that runs past it is a stale watch,
// counted and logged, and the loop starts over with a new call.
type follower struct {
	name       string
	wait       time.Duration
	staleAfter time.Duration
	minDelay   time.Duration
	log        *slog.Logger
	stats      *Stats
	// fetch makes one call; it returns the index of the answer. It keeps what it read.
	fetch func(ctx context.Context, index uint64, wait time.Duration) (uint64, error)
	// changed is called after fetch returned a new index.
	changed func()
}

func (f *follower) run(ctx context.Context) {
	var (
		index    uint64
		failures int
		first    = true
	)
	for ctx.Err() == nil {
		start := time.Now()
		callCtx, cancel := context.WithTimeoutCause(ctx, f.wait+f.wait/16+f.staleAfter, errStale)
		next, err := f.fetch(callCtx, index, f.wait)
		stale := errors.Is(context.Cause(callCtx), errStale)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			index = 0
			failures++
			if stale {
				f.stats.StaleRestarts.Add(1)
				f.log.Warn("watch stale: restarting it", "watch", f.name, "waited", time.Since(start).Round(time.Millisecond))
			} else {
				f.stats.WatchErrors.Add(1)
				if failures == 1 {
					f.log.Warn("watch failing; routes kept as they were", "watch", f.name, "err", err)
				}
			}
			if !stale {
				sleep(ctx, backoff(failures))
			}
			continue
		}
		f.stats.contact(time.Now())
		if failures > 0 {
			f.log.Info("watch recovered", "watch", f.name, "after", failures)
			failures = 0
		}
		if !first {
			if rest := f.minDelay - time.Since(start); rest > 0 {
				sleep(ctx, rest)
			}
		}
		first = false
		var changed bool
		if index, changed = nextIndex(index, next); changed {
			f.changed()
		}
	}
}

// nextIndex is the index the next blocking query sends after one answered with got, and
// whether the answer may carry news.
func nextIndex(prev, got uint64) (uint64, bool) {
	if got == 0 {
		got = 1 // a zero index would make every query return at once
	}
	switch {
	case got < prev:
		return 0, false // went backwards: ask again from the start
	case got == prev:
		return prev, false // the wait ran out: nothing changed
	}
	return got, true
}

// backoff is 100ms doubling to 5s, plus up to a quarter of jitter.
func backoff(failures int) time.Duration {
	d := 100 * time.Millisecond << min(failures-1, 6)
	d = min(d, 5*time.Second)
	return d + time.Duration(rand.Int64N(int64(d/4)+1))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

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
	go func() { defer w.wg.Done(); w.follower("routes", w.fetchRoutes).run(ctx) }()
	go func() { defer w.wg.Done(); w.follower("catalog", w.fetchCatalog(ctx)).run(ctx) }()
	<-ctx.Done()
	w.wg.Wait()
}

func (w *watcher) follower(name string, fetch func(context.Context, uint64, time.Duration) (uint64, error)) *follower {
	return &follower{name: name, wait: w.wait, staleAfter: w.staleAfter, minDelay: w.minDelay,
		log: w.log, stats: w.stats, fetch: fetch, changed: w.changed}
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
			go func() { defer w.wg.Done(); w.follower("health "+name, w.fetchHealth(name)).run(sctx) }()
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
