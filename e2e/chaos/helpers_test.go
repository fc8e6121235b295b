package chaos

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/cluster"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// newCluster starts a cluster for a chaos test, or skips the test outside make chaos.
func newCluster(t *testing.T, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	if os.Getenv("GILLIAM_CHAOS") != "1" {
		t.Skip("chaos test: needs root and minutes; make chaos runs it (GILLIAM_CHAOS=1)")
	}
	c := cluster.New(t, opts)
	t.Logf("cluster %s (%d hosts) started in %s", c.Name, len(c.Hosts), c.StartedIn.Round(100*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster logs:\n%s", c.Logs())
		}
	})
	return c
}

// pushApp pushes the test app (internal/testenv/testapp) to the cluster's registry and
// returns it pinned by digest.
func pushApp(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	d := testenv.NewDocker(t)
	return testenv.PushImage(t, d.TestImage(t), c.Registry.Addr+"/test/app")
}

// formation is a gilliam.yml running image at the scale given, with a check every second,
// roll-outs one instance at a time, and env lines.
func formation(name, image string, scale int, env ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "formation: %s\nservices:\n  web:\n    type: image\n    image: %s\n    scale: %d\n    ports: [8080]\n", name, image, scale)
	b.WriteString("    check: {http: /healthz, interval: 1s, timeout: 1s}\n")
	b.WriteString("    rollout: {max_parallel: 1, min_healthy: 2s, deadline: 3m}\n")
	if len(env) > 0 {
		b.WriteString("    env:\n")
		for _, e := range env {
			fmt.Fprintf(&b, "      %s\n", e)
		}
	}
	return b.String()
}

// instance is one registration of a service in the catalog.
type instance struct {
	ID, Host, Addr, Release string
	Passing                 bool
	// Answer is the body of GET / (empty when it did not answer within a second).
	Answer string
	Meta   map[string]string
}

// instances lists a service's registrations in the catalog (passing or not), each asked
// GET / at once.
func instances(c *cluster.Cluster, service string) ([]instance, error) {
	entries, _, err := c.Control.Client.Health().Service(service, "", false, nil)
	if err != nil {
		return nil, err
	}
	out := make([]instance, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		out[i] = instance{ID: e.Service.Meta["instance"], Host: e.Service.Meta["host"], Release: e.Service.Meta["release"],
			Addr: fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port), Passing: e.Checks.AggregatedStatus() == "passing"}
		wg.Add(1)
		go func() { defer wg.Done(); out[i].Answer = get("http://" + out[i].Addr + "/") }()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// answering lists the passing registrations that answer with message.
func answering(c *cluster.Cluster, service, message string) []instance {
	all, _ := instances(c, service)
	var out []instance
	for _, i := range all {
		if i.Passing && i.Answer == message {
			out = append(out, i)
		}
	}
	return out
}

// hostsOf is the set of hosts of the instances.
func hostsOf(is []instance) map[string]int {
	out := map[string]int{}
	for _, i := range is {
		out[i.Host]++
	}
	return out
}

// get is GET url with a one-second timeout: the trimmed body of a 200, else "".
func get(url string) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// waitSpread waits until scale instances answer message, one host each.
func waitSpread(t *testing.T, c *cluster.Cluster, service, message string, scale int, limit time.Duration) []instance {
	t.Helper()
	var got []instance
	testenv.Eventually(t, limit, fmt.Sprintf("%d instances of %s answering %q on %d hosts", scale, service, message, scale), func() bool {
		got = answering(c, service, message)
		return len(got) == scale && len(hostsOf(got)) == scale
	})
	return got
}

// running lists the instances whose containers run on a host (by the host daemon's labels).
func running(t *testing.T, h *cluster.Host) map[string]string {
	t.Helper()
	cs, err := h.Containers()
	if err != nil {
		t.Logf("containers of %s: %v", h.ID, err)
		return nil
	}
	out := map[string]string{}
	for _, ct := range cs {
		if ct.Labels[hostd.LabelHost] == h.ID {
			out[ct.Labels[hostd.LabelInstance]] = ct.ID
		}
	}
	return out
}

// desired reads a service's desired state, nil while Consul does not answer.
func desired(c *cluster.Cluster, formation, service string) *state.DesiredService {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, _, err := c.Store.Desired(ctx, formation)
	if err != nil || d == nil {
		return nil
	}
	ds, ok := d.Services[service]
	if !ok {
		return nil
	}
	return &ds
}

// watchStops records, every 250ms, every instance container that stopped on a host while
// the instance was still assigned to that host: a host stopping what it should run. The
// containers are read before the assignments, so an instance unassigned then stopped
// between the two reads is not counted.
type watchStops struct {
	mu    sync.Mutex
	stops []string
	stop  chan struct{}
	done  chan struct{}
}

func startWatchStops(t *testing.T, c *cluster.Cluster) *watchStops {
	w := &watchStops{stop: make(chan struct{}), done: make(chan struct{})}
	prev := map[string]map[string]string{} // host -> instance -> container
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			now := map[string]map[string]string{}
			for _, h := range c.Hosts {
				if h.Off() {
					continue
				}
				cs, err := h.Containers()
				if err != nil {
					continue
				}
				m := map[string]string{}
				for _, ct := range cs {
					if ct.Labels[hostd.LabelHost] == h.ID {
						m[ct.Labels[hostd.LabelInstance]] = ct.ID
					}
				}
				now[h.ID] = m
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			as, _, err := c.Store.Assignments(ctx)
			cancel()
			if err != nil {
				continue // Consul electing: the next sample sees it
			}
			for host, before := range prev {
				after, ok := now[host]
				if !ok {
					continue
				}
				assigned := map[string]bool{}
				if a := as[host]; a != nil {
					for _, i := range a.Instances {
						assigned[i.ID] = true
					}
				}
				for inst, id := range before {
					if after[inst] != id && assigned[inst] {
						w.mu.Lock()
						w.stops = append(w.stops, fmt.Sprintf("%s on %s (container %.12s)", inst, host, id))
						w.mu.Unlock()
					}
				}
			}
			prev = now
		}
	}()
	t.Cleanup(func() { w.end() })
	return w
}

// end stops the watch and returns the stops it saw.
func (w *watchStops) end() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.stops...)
}

// since formats a duration for a report.
func since(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
