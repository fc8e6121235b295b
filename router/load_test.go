package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// loadResult is what a load run saw.
type loadResult struct {
	sent, ok  int
	statuses  map[int]int
	errors    []string
	latencies []time.Duration
	elapsed   time.Duration
}

// merge adds o's requests to r (elapsed adds up: the runs were one after the other).
func (r *loadResult) merge(o *loadResult) {
	r.sent += o.sent
	r.ok += o.ok
	for k, v := range o.statuses {
		r.statuses[k] += v
	}
	r.errors = append(r.errors, o.errors...)
	r.latencies = append(r.latencies, o.latencies...)
	r.elapsed += o.elapsed
}

func (r *loadResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	return r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))]
}

func (r *loadResult) String() string {
	return fmt.Sprintf("%d requests in %s (%.0f req/s): %d ok, statuses %v, %d errors; p50 %s, p99 %s",
		r.sent, r.elapsed.Round(time.Millisecond), float64(r.sent)/r.elapsed.Seconds(), r.ok, r.statuses, len(r.errors),
		r.percentile(0.50).Round(time.Microsecond), r.percentile(0.99).Round(time.Microsecond))
}

// target is where a load run sends GET requests: a URL, and the Host header to send.
type target struct {
	url, host string
}

func newLoadClient() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 90 * time.Second}}
}

func (tg target) get(c *http.Client) (int, error) {
	req, err := http.NewRequest("GET", tg.url, nil)
	if err != nil {
		return 0, err
	}
	if tg.host != "" {
		req.Host = tg.host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// constantRate sends rate requests a second to tg until ctx ends, each on its own
// goroutine (at most 512 in flight: beyond, a tick waits), like vegeta's constant pacer.
func constantRate(ctx context.Context, c *http.Client, tg target, rate int) *loadResult {
	res := &loadResult{statuses: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; ; i++ {
		next := start.Add(time.Duration(i) * interval)
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			code, err := tg.get(c)
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			res.sent++
			res.latencies = append(res.latencies, lat)
			if err != nil {
				res.errors = append(res.errors, err.Error())
				return
			}
			res.statuses[code]++
			if code >= 200 && code < 300 {
				res.ok++
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// closedLoop runs workers that each send the next request as soon as the last answered,
// for d: the most the target serves at that concurrency.
func closedLoop(c *http.Client, tg target, workers int, d time.Duration) *loadResult {
	res := &loadResult{statuses: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lats []time.Duration
			codes := map[int]int{}
			var errs []string
			for time.Now().Before(deadline) {
				t0 := time.Now()
				code, err := tg.get(c)
				lats = append(lats, time.Since(t0))
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				codes[code]++
			}
			mu.Lock()
			defer mu.Unlock()
			res.sent += len(lats)
			res.latencies = append(res.latencies, lats...)
			res.errors = append(res.errors, errs...)
			for k, v := range codes {
				res.statuses[k] += v
				if k >= 200 && k < 300 {
					res.ok += v
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// Zero failed requests at 200 req/s while the instances behind a name are replaced again
// and again the way hostd does it in a roll-out, a rollback, a scale-down and a drain:
// the new instance registers (its HTTP check makes it passing), the old one is
// deregistered, serves what it has in flight, then stops.
func TestZeroFailedRequestsAcrossSwaps(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)
	gen := 0
	start := func() *backend {
		gen++
		b := newBackend(t, fmt.Sprint("v", gen), nil)
		b.register(t, c.Client, "load", "web", regOpts{status: api.HealthCritical})
		return b
	}
	stop := func(b *backend) {
		b.deregister(t, c.Client)
		time.Sleep(time.Second) // hostd's drain (its default --drain-delay): deregistered, then stopped
		b.srv.Close()           // waits for the requests in flight
	}
	running := []*backend{start(), start()}
	e.waitBackends("load.localhost", 2)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *loadResult)
	go func() {
		done <- constantRate(ctx, newLoadClient(), target{"http://" + e.addr + "/", "load.localhost"}, 200)
	}()

	time.Sleep(time.Second)
	steps := []string{}
	swap := func(what string, add, remove int) {
		var fresh []*backend
		for range add {
			fresh = append(fresh, start())
		}
		e.waitBackends("load.localhost", len(running)+add)
		for _, b := range running[:remove] {
			stop(b)
		}
		running = append(running[remove:], fresh...)
		e.waitBackends("load.localhost", len(running))
		steps = append(steps, what)
		time.Sleep(500 * time.Millisecond)
	}
	swap("roll-out: 2 new, 2 old stopped one by one", 2, 2)
	swap("rollback: 2 of the previous release back, 2 stopped", 2, 2)
	swap("scale-down: 2 to 1", 0, 1)
	swap("scale-up: 1 to 3", 2, 0)
	swap("drain: every instance replaced at once", 3, 3)
	cancel()
	res := <-done

	testenv.Report(t, "router-zero-failures", fmt.Sprintf(
		"router, %s at 200 req/s through instance swaps (%v): %s; sent again to another instance %d",
		res.elapsed.Round(time.Second), steps, res, e.router.Stats().Retries.Load()))
	if len(res.errors) > 0 || res.ok != res.sent {
		t.Errorf("%d requests: %d ok, statuses %v, errors (first 5) %v", res.sent, res.ok, res.statuses, res.errors[:min(5, len(res.errors))])
	}
	if res.sent < 1000 {
		t.Errorf("only %d requests sent: the load generator fell behind", res.sent)
	}
}
