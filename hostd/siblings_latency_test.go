package hostd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The latency the addressing layer adds, side by side on the same backend in one run:
// HTTP requests straight to it; through the sibling proxy to an instance on the same host;
// through the proxy and the mesh (mutual TLS with a real Connect CA certificate) as to an
// instance on another host. Each way twice: a new connection per request (what a client
// without keep-alive pays: the proxy's dial, and the mesh's TLS handshake, resumed), and
// requests on one kept connection (what a pooled client pays per request). The figures are
// reported (docs/networking.md), not asserted.
func TestSiblingProxyLatency(t *testing.T) {
	consul := testenv.NewConsul(t)
	store := state.NewStore(consul.Client, "")
	d, err := New(Config{ID: "lat-a", Advertise: "127.0.0.1", DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	if err := d.startMesh(ctx, &wg); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the mesh's certificate and roots from Consul", func() bool {
		return d.mesh.Load().leaf.Load() != nil && d.mesh.Load().roots.Load() != nil
	})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	host, portStr, _ := net.SplitHostPort(strings.TrimPrefix(backend.URL, "http://"))
	var port int
	fmt.Sscan(portStr, &port)
	local := map[string]localInstance{"store-0": {IP: host, Ports: []int{port}}}
	d.local.Store(&local)

	// Two listeners of the proxy on 127.0.0.1: one whose only instance is on this host,
	// one whose only instance is on "another" host, reached through the mesh (this one).
	_, lo, _ := net.ParseCIDR("127.0.0.0/8")
	n := formationNet{Name: "lat", Gateway: net.ParseIP("127.0.0.1"), Subnet: lo}
	localPort, meshPort := testenv.FreePort(t), testenv.FreePort(t)
	d.proxy.sync(map[listenKey]listenSpec{
		{"lat", localPort}: {service: "lat-local", port: port, net: n},
		{"lat", meshPort}:  {service: "lat-mesh", port: port, net: n},
	})
	defer d.proxy.close()
	set := func(service string, up upstream) {
		d.proxy.mu.Lock()
		u := d.proxy.services[service]
		d.proxy.mu.Unlock()
		u.cancel() // no Consul query: the instance is given
		list := []upstream{up}
		u.list.Store(&list)
		u.once.Do(func() { close(u.ready) })
	}
	set("lat-local", upstream{Instance: "store-0", Host: "lat-a", IP: host})
	set("lat-mesh", upstream{Instance: "store-0", Host: "lat-b", IP: host, Mesh: d.mesh.Load().addr})

	const requests = 2000
	ways := []struct{ name, url string }{
		{"direct", backend.URL + "/"},
		{"proxy, same host", fmt.Sprintf("http://127.0.0.1:%d/", localPort)},
		{"proxy + mesh (mTLS)", fmt.Sprintf("http://127.0.0.1:%d/", meshPort)},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "sibling proxy latency, %d sequential GETs each, one run, 2 cores shared:\n", requests)
	fmt.Fprintf(&b, "  %-22s %-26s %s\n", "way", "new connection p50 / p99", "kept connection p50 / p99")
	for _, w := range ways {
		fresh := measure(t, w.url, requests, true)
		kept := measure(t, w.url, requests, false)
		fmt.Fprintf(&b, "  %-22s %-26s %s\n", w.name, fresh, kept)
	}
	testenv.Report(t, "siblings-latency", strings.TrimRight(b.String(), "\n"))
}

// measure makes n GETs of url one after the other and returns "p50 / p99".
func measure(t *testing.T, url string, n int, fresh bool) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: fresh}}
	defer c.CloseIdleConnections()
	get := func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && string(b) != "ok" {
			err = fmt.Errorf("answer %q", b)
		}
		return err
	}
	for range 50 { // warm up: connections, TLS session tickets
		if err := get(); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	times := make([]time.Duration, n)
	for i := range times {
		start := time.Now()
		if err := get(); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	q := func(p float64) string { return times[int(p*float64(n-1))].Round(time.Microsecond).String() }
	return q(0.50) + " / " + q(0.99)
}
