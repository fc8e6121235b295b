package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// An instance that starts failing its check while its process runs is restarted by its
// host; restarted three times there, its release is placed on another host.
func TestUnhealthyInstanceIsReplaced(t *testing.T) {
	parallel(t, 44*time.Second)
	c := newCluster(t)
	fast := func(cfg *hostd.Config) { cfg.UnhealthyAfter = 2 * time.Second }
	first := c.host("u1", fast)
	second := c.host("u2", fast)
	image := c.testImage()
	c.repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf(`formation: sick
services:
  web:
    image: %s
    scale: 1
    ports: [8080]
    env: {HEALTH_FAIL_AFTER: 4s}
    check: {http: /healthz, interval: 1s, timeout: 1s}
    restart: {min_backoff: 1s, max_backoff: 2s}
`, image)}, "sick")
	c.sync("a", nil)
	var on string
	testenv.Eventually(t, 90*time.Second, "the instance placed", func() bool {
		for _, h := range c.assigned() {
			on = h
		}
		return on != ""
	})
	other := map[string]string{first: second, second: first}[on]
	start := time.Now()
	testenv.Eventually(t, 3*time.Minute, "the instance moved to the other host", func() bool {
		for _, h := range c.assigned() {
			if h == other {
				return true
			}
		}
		return false
	})
	testenv.Report(t, "unhealthy-moved", fmt.Sprintf("Instance failing its check (critical 2s before a restart, 3 restarts before a move): moved to another host after %s",
		time.Since(start).Round(100*time.Millisecond)))
}
