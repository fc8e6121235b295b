package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/router"
)

// Zero failed requests through the router, at 200 req/s, across a roll-out, a rollback, a
// scale-down and a host drain, with real host daemons stopping real containers: hostd
// takes an instance out of the catalog, waits its drain delay, then stops it; the router
// follows the catalog with a blocking query and sends nothing new to what left it.
func TestZeroFailedRequestsThroughTheRouter(t *testing.T) {
	c := newCluster(t)
	h1 := c.host("z1")
	c.host("z2")
	r, err := router.New(router.Config{Consul: c.consul.Client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	routerDone := make(chan struct{})
	go func() { defer close(routerDone); r.Run(ctx) }()
	srv := httptest.NewServer(r)
	t.Cleanup(func() { srv.Close(); cancel(); <-routerDone })

	image := c.testImage()
	file := func(message, extra string) map[string]string {
		return map[string]string{"gilliam.yml": fmt.Sprintf(`formation: zero
services:
  web:
    image: %s
    scale: 2
    ports: [8080]
    env: {MESSAGE: %s}
    check: {http: /healthz, interval: 1s, timeout: 1s}
    rollout: {max_parallel: 1, min_healthy: 1s, deadline: 2m}
%s`, image, message, extra)}
	}
	c.repo.Commit(file("one", ""), "one")
	c.sync("a", nil)
	testenv.Eventually(t, 2*time.Minute, "2 instances of one through the router", func() bool { return c.countAnswering("zero-web", "one") == 2 })
	l := testenv.StartLoad(srv.URL+"/", "zero.localhost", 200)
	settled := func(what string, ok func() bool) {
		t.Helper()
		testenv.Eventually(t, 2*time.Minute, what, func() bool {
			ds := c.desired("zero", "web")
			entries, _, err := c.consul.Client.Health().Service("zero-web", "", false, nil)
			return ok() && ds.Rollout == nil && err == nil && len(entries) == ds.Scale()
		})
		time.Sleep(2 * time.Second) // what drains, drains under load
	}
	var report []string
	phase := func(name string) {
		sent, failed := l.Counts()
		report = append(report, fmt.Sprintf("  %-10s %6d requests so far, %d failed", name, sent, failed))
	}

	c.repo.Commit(file("two", ""), "two")
	settled("the roll-out to two", func() bool { return c.countAnswering("zero-web", "two") == 2 })
	phase("roll-out")
	c.cli("rollback", "zero", "web")
	settled("the rollback to one", func() bool { return c.countAnswering("zero-web", "one") == 2 })
	phase("rollback")
	c.cli("unpin", "zero", "web")
	settled("back on two", func() bool { return c.countAnswering("zero-web", "two") == 2 })
	c.cli("scale", "zero", "web=1")
	settled("scaled down to 1", func() bool { return c.countAnswering("zero-web", "two") == 1 })
	phase("scale-down")
	c.cli("scale", "zero", "web=2")
	settled("scaled up to 2", func() bool { return c.countAnswering("zero-web", "two") == 2 })
	c.repo.Commit(file("two", "    constraints: [\"gilliam.host!="+h1+"\"]\n"), "drain "+h1)
	settled("host "+h1+" drained", func() bool {
		for _, h := range c.assigned() {
			if h == h1 {
				return false
			}
		}
		return c.countAnswering("zero-web", "two") == 2
	})
	phase("host drain")
	l.Stop()
	sent, failed := l.Counts()
	testenv.Report(t, "e2e-router-zero-failed", fmt.Sprintf("Through the router at 200 req/s, real host daemons (drain delay 1s): %d requests, %d failed\n%s",
		sent, failed, strings.Join(report, "\n")))
	if failed > 0 {
		t.Errorf("%d of %d requests failed; first: %+v", failed, sent, l.Failures()[:min(5, failed)])
	}
}
