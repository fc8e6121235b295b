package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A host is partitioned for 60 seconds, then healed, with scale 3 spread on 3 hosts and
// default settings. While cut off it keeps running its instance (static stability: it
// cannot tell a partition from a Consul outage) while the leader places a replacement on a
// live host. After healing no instance is lost, the stale copy is stopped and deregistered
// within 10 seconds, and no more than scale + max_parallel instances pass at any moment.
func TestChaosPartition(t *testing.T) {
	const scale, maxParallel = 3, 1
	c := newCluster(t, cluster.Options{})
	image := pushApp(t, c)
	c.Repo.Commit(map[string]string{"gilliam.yml": formation("part", image, scale, "MESSAGE: up")}, "part")
	c.StartSync("a", nil)
	waitSpread(t, c, "part-web", "up", scale, 3*time.Minute)

	h := c.Host(3)
	stale := running(t, h)
	if len(stale) != 1 {
		t.Fatalf("%s runs %d instances, want 1", h.ID, len(stale))
	}

	// A sample every 250ms: passing registrations in the catalog, and those that answer.
	type sample struct {
		at                          time.Time
		passing, answering, onStale int
	}
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			all, err := instances(c, "part-web")
			if err != nil {
				continue
			}
			s := sample{at: time.Now()}
			for _, i := range all {
				if i.Passing {
					s.passing++
					if i.Host == h.ID {
						s.onStale++
					}
				}
				if i.Passing && i.Answer == "up" {
					s.answering++
				}
			}
			mu.Lock()
			samples = append(samples, s)
			mu.Unlock()
		}
	}()

	parted := time.Now()
	if err := h.Partition(); err != nil {
		t.Fatal(err)
	}
	var moved time.Duration
	testenv.Eventually(t, 90*time.Second, "the partitioned host's instance replaced: 3 answering on the other hosts", func() bool {
		n := 0
		for _, i := range answering(c, "part-web", "up") {
			if i.Host != h.ID {
				n++
			}
		}
		if n == scale {
			moved = time.Since(parted)
			return true
		}
		return false
	})
	time.Sleep(time.Until(parted.Add(60 * time.Second)))
	// Static stability: cut off, the host kept its instance running.
	keeps := running(t, h)
	for inst, id := range stale {
		if keeps[inst] != id {
			t.Errorf("the partitioned host stopped %s while cut off", inst)
		}
	}

	healed := time.Now()
	if err := h.Heal(); err != nil {
		t.Fatal(err)
	}
	var stopped time.Duration
	testenv.Eventually(t, 2*time.Minute, "the stale copy stopped and gone from the passing registrations", func() bool {
		if len(running(t, h)) != 0 {
			return false
		}
		for _, i := range answering(c, "part-web", "up") {
			if i.Host == h.ID {
				return false
			}
		}
		stopped = time.Since(healed)
		return true
	})
	settled := time.Now()
	time.Sleep(10 * time.Second) // and after it settles
	close(stop)
	<-sampled
	final := answering(c, "part-web", "up")

	mu.Lock()
	defer mu.Unlock()
	minDuring, maxAfter, maxSettled, bothFor := scale, 0, 0, time.Duration(0)
	var bothSince time.Time
	for _, s := range samples {
		switch {
		case s.at.Before(healed):
			minDuring = min(minDuring, s.answering)
		default:
			maxAfter = max(maxAfter, s.passing)
			if s.at.After(settled) {
				maxSettled = max(maxSettled, s.passing)
			}
			// Both copies passing: the stale one on the healed host and its replacement.
			if s.onStale > 0 && s.passing > scale {
				if bothSince.IsZero() {
					bothSince = s.at
				}
			} else if !bothSince.IsZero() {
				bothFor += s.at.Sub(bothSince)
				bothSince = time.Time{}
			}
		}
	}
	testenv.Report(t, "chaos-partition", strings.Join([]string{
		fmt.Sprintf("host partitioned 60s then healed, scale %d on 3 hosts, max_parallel %d, default settings (host TTL %s, dead after %s):", scale, maxParallel, hostTTL, deadAfter),
		fmt.Sprintf("  instance replaced on a live host after              %s", since(moved)),
		fmt.Sprintf("  fewest instances answering during the partition    %d", minDuring),
		fmt.Sprintf("  stale copy stopped and deregistered after healing   %s (target: within 10s)", since(stopped)),
		fmt.Sprintf("  stale copy and its replacement both passing for     %s after healing", since(bothFor)),
		fmt.Sprintf("  most instances passing after healing                %d (bound: scale + max_parallel = %d)", maxAfter, scale+maxParallel),
		fmt.Sprintf("  most instances passing once settled                 %d", maxSettled),
	}, "\n"))

	if len(final) != scale {
		t.Errorf("%d instances answer after healing, want %d", len(final), scale)
	}
	if minDuring < scale-1 {
		t.Errorf("only %d instances answered during the partition: the live hosts' instances were touched", minDuring)
	}
	if maxAfter > scale+maxParallel {
		t.Errorf("%d instances passed at once after healing, over scale + max_parallel = %d", maxAfter, scale+maxParallel)
	}
	if stopped > 10*time.Second {
		t.Errorf("the stale copy took %s after healing to stop, over the 10s target", since(stopped))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if a, _, err := c.Store.Assignment(ctx, h.ID); err != nil || len(a.Instances) != 0 {
		t.Errorf("the healed host's assignment: %+v %v, want none (its instance moved)", a, err)
	}
}
