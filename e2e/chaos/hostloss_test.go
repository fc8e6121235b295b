package chaos

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Default settings of the daemons, as the figures below assume them.
const (
	hostTTL   = 5 * time.Second  // gilliam-sync host --ttl
	deadAfter = 10 * time.Second // gilliam-sync sync --dead-after
)

// A host loses power with scale 3 spread on 3 hosts, default settings: its instance serves
// again on a live host, and the dead host's registrations (its instance's and its own
// liveness service) leave the catalog within dead_after plus 5 seconds of the host being
// dead (its TTL run out). With the agent gone with the machine, only the control plane can
// remove them: Consul keeps a failed node's services until it reaps the node (72h).
func TestChaosHostPowerLoss(t *testing.T) {
	c := newCluster(t, cluster.Options{})
	image := pushApp(t, c)
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("spread", image, 3, "MESSAGE: up")}, "spread")
	c.StartSync("a", nil)
	waitSpread(t, c, "spread-web", "up", 3, 3*time.Minute)

	// Clients go through a router, as people would: what they see of the loss is counted.
	rt, err := router.New(router.Config{Consul: c.Control.Client})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	routed := make(chan struct{})
	go func() { defer close(routed); rt.Run(ctx) }()
	srv := httptest.NewServer(rt)
	defer func() { srv.Close(); cancel(); <-routed }()
	testenv.Eventually(t, time.Minute, "the formation answering through the router", func() bool {
		return testenv.HTTPGetHost(srv.URL+"/", "spread.localhost") == "up"
	})
	load := testenv.StartLoad(srv.URL+"/", "spread.localhost", 200)

	dead := c.Host(2)
	off := time.Now()
	if err := dead.PowerOff(); err != nil {
		t.Fatal(err)
	}
	// The dead host's registrations in the catalog: the control plane's to remove. Watched
	// from the power cut on, beside the rest (the load's end waits for requests in flight).
	bound := hostTTL + deadAfter + 5*time.Second
	registered := func() []string {
		var left []string
		for _, svc := range []string{"spread-web", state.HostService} {
			entries, _, err := c.Control.Client.Catalog().Service(svc, "", nil)
			if err != nil {
				return []string{"catalog: " + err.Error()}
			}
			for _, e := range entries {
				if e.Node == dead.ID {
					left = append(left, e.ServiceID)
				}
			}
		}
		return left
	}
	var gone time.Duration
	var left []string
	watched := make(chan struct{})
	wctx, stopWatch := context.WithDeadline(context.Background(), off.Add(bound+30*time.Second)) // past the bound, to report when
	defer stopWatch()
	go func() {
		defer close(watched)
		for wctx.Err() == nil {
			if left = registered(); len(left) == 0 {
				gone = time.Since(off)
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	// Figures: when the dead host's instance stopped counting as passing (Consul saw the
	// node fail), and when three instances answer again, none on the dead host.
	var notPassing, replaced time.Duration
	testenv.Eventually(t, 2*time.Minute, "3 instances answering on the two live hosts", func() bool {
		all, err := instances(c, "spread-web")
		if err != nil {
			return false
		}
		n, deadPassing := 0, false
		for _, i := range all {
			if i.Host == dead.ID && i.Passing {
				deadPassing = true
			}
			if i.Host != dead.ID && i.Passing && i.Answer == "up" {
				n++
			}
		}
		if !deadPassing && notPassing == 0 {
			notPassing = time.Since(off)
		}
		if n == 3 {
			replaced = time.Since(off)
			return true
		}
		return false
	})

	time.Sleep(2 * time.Second)
	load.Stop()
	sent, failed := load.Counts()
	window := "none"
	if fs := load.Failures(); len(fs) > 0 {
		first, last := fs[0].At, fs[0].At
		for _, f := range fs {
			first, last = minTime(first, f.At), maxTime(last, f.At)
		}
		window = fmt.Sprintf("requests sent from %s to %s after the power went, first: %s", since(first.Sub(off)), since(last.Sub(off)), fs[0].What)
	}

	<-watched
	goneText := "still there " + since(time.Since(off)) + " after: " + strings.Join(left, ", ")
	if gone > 0 {
		goneText = "after " + since(gone)
	}
	testenv.Report(t, "chaos-host-power-loss", strings.Join([]string{
		fmt.Sprintf("host power loss, scale 3 on 3 hosts (namespaces, own engines and agents), default settings (host TTL %s, dead after %s):", hostTTL, deadAfter),
		fmt.Sprintf("  cluster started in                                  %s", since(c.StartedIn)),
		fmt.Sprintf("  the dead host's instance not passing after          %s", since(notPassing)),
		fmt.Sprintf("  lost instance serving on a live host after          %s (target: under 10s)", since(replaced)),
		fmt.Sprintf("  dead host's registrations gone from the catalog     %s (bound: TTL + dead after + 5s = %s)", goneText, bound),
		fmt.Sprintf("  through a router at 200 req/s                       %d requests, %d failed (%s)", sent, failed, window),
	}, "\n"))
	if gone == 0 || gone > bound {
		t.Errorf("the dead host's registrations are %s, over the bound of %s: the sync leader must deregister a dead host's instances from the catalog (issue 17)", goneText, bound)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
