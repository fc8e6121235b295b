package hostd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The sibling proxy follows Consul: an instance that leaves the catalog gets no new
// connection once Consul says so (timed: the target is under a second), and a connection
// it already has goes on working (drained, not cut); a connection from outside the
// formation's network is closed at once.
func TestSiblingProxyFollowsAndDrains(t *testing.T) {
	consul := testenv.NewConsul(t)
	d, err := New(Config{ID: "drain-a", Advertise: "127.0.0.1", DataDir: t.TempDir()}, state.NewStore(consul.Client, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.proxy.close()
	port := testenv.FreePort(t)
	serve := func(ip, name string) {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	serve("127.0.0.2", "a")
	serve("127.0.0.3", "b")
	agent := consul.Client.Agent()
	register := func(name, ip string) {
		if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: "dr-store-" + name, Name: "dr-store", Tags: []string{TagInstance},
			Address: ip, Port: port, Meta: map[string]string{"instance": name, "host": "drain-a", MetaIP: ip}}); err != nil {
			t.Fatal(err)
		}
	}
	register("a", "127.0.0.2")

	_, lo, _ := net.ParseCIDR("127.0.0.0/8")
	_, other, _ := net.ParseCIDR("10.99.0.0/16")
	listen, refused := testenv.FreePort(t), testenv.FreePort(t)
	d.proxy.sync(map[listenKey]listenSpec{
		{"dr", listen}:   {service: "dr-store", port: port, net: formationNet{Name: "dr", Gateway: net.ParseIP("127.0.0.1"), Subnet: lo}},
		{"dr2", refused}: {service: "dr-store", port: port, net: formationNet{Name: "dr2", Gateway: net.ParseIP("127.0.0.1"), Subnet: other}},
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/", listen)
	get := func(c *http.Client) string {
		resp, err := c.Get(url)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	kept := &http.Client{Timeout: 2 * time.Second}
	fresh := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	testenv.Eventually(t, 10*time.Second, "the proxy reaching instance a", func() bool { return get(kept) == "a" })

	// From outside the network: closed without an answer.
	if got := get(&http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}); got != "a" {
		t.Fatalf("fresh connection: %q", got)
	}
	if got := (func() string {
		r, err := fresh.Get(fmt.Sprintf("http://127.0.0.1:%d/", refused))
		if err != nil {
			return "error"
		}
		r.Body.Close()
		return r.Status
	})(); got != "error" {
		t.Errorf("a connection from outside the formation's network was answered: %s", got)
	}

	// a leaves the catalog, b enters: new connections go to b, a's kept one goes on.
	register("b", "127.0.0.3")
	if err := agent.ServiceDeregister("dr-store-a"); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	var followed time.Duration
	testenv.Eventually(t, 10*time.Second, "new connections going to b only", func() bool {
		if get(fresh) != "b" {
			return false
		}
		followed = time.Since(changed)
		return true
	})
	if got := get(kept); got != "a" {
		t.Errorf("the kept connection to the drained instance: %q, want a (connections are not cut)", got)
	}
	testenv.Report(t, "siblings-follow-catalog", fmt.Sprintf("sibling proxy: an instance gone from the catalog got its last new connection, and the new one its first, %s after the change in Consul (target < 1s)",
		followed.Round(time.Millisecond)))
	if followed > time.Second {
		t.Logf("followed in %s: over the 1s target (a loaded machine?)", followed)
	}
}
