package hostd_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Two host daemons on one engine: web on host A reaches its formation's internal store on
// host B by name (store:7000, $STORE_ADDR), through A's sibling proxy and B's mesh
// listener; the store publishes no port; a container of another formation (a preview of
// the same one, on host A) reaches neither the store's container nor A's proxy for web,
// and its own name store:7000 leads to its own formation's store only; a client without a Connect certificate is refused
// by the mesh; a new store instance gets connections as soon as Consul has it passing.
func TestSiblingsByName(t *testing.T) {
	e := newEnv(t)
	hostB := e.hostID + "b"
	t.Cleanup(func() { e.docker.RemoveContainers(t, hostd.LabelHost, hostB) })
	ctx := context.Background()

	siblings := func(service string, port, listen int) []state.Sibling {
		return []state.Sibling{{Service: service, Ports: []state.SiblingPort{{Port: port, Listen: listen}}}}
	}
	store := e.release(t, "store one", func(r *state.Release) {
		r.Formation, r.Service, r.Internal = "net", "store", true
		r.Siblings = siblings("web", 8080, 8080)
	})
	web := e.release(t, "web", func(r *state.Release) {
		r.Formation = "net"
		r.Siblings = siblings("store", 8080, 7000)
	})
	// Another formation: a preview of net, whose web has the same siblings by name. Its
	// store:7000 is its own formation's store (none runs), never net's.
	other := e.release(t, "other", func(r *state.Release) {
		r.Formation = "net-pr-1"
		r.Siblings = siblings("store", 8080, 7000)
	})

	cfgA := e.config(t)
	e.run(t, cfgA, nil)
	cfgB := e.config(t)
	cfgB.ID, cfgB.DataDir = hostB, t.TempDir()
	e.run(t, cfgB, nil)
	assignTo(t, e, e.hostID, append(instances(web, 1), instances(other, 1)...))
	assignTo(t, e, hostB, instances(store, 1))

	var webAddr, otherAddr string
	testenv.Eventually(t, 60*time.Second, "web, other and the store passing", func() bool {
		w, o, s := e.passing("net-web"), e.passing("net-pr-1-web"), e.passing("net-store")
		for _, a := range w {
			webAddr = a
		}
		for _, a := range o {
			otherAddr = a
		}
		return len(w) == 1 && len(o) == 1 && len(s) == 1
	})
	fetch := func(from, u string) string {
		return testenv.HTTPGet("http://" + from + "/fetch?url=" + url.QueryEscape(u))
	}
	if got := testenv.HTTPGet("http://" + webAddr + "/env/STORE_ADDR"); got != "store:7000" {
		t.Errorf("STORE_ADDR = %q, want store:7000", got)
	}
	testenv.Eventually(t, 20*time.Second, "web reaching the store on the other host by name", func() bool {
		return fetch(webAddr, "http://store:7000/") == "200 store one"
	})

	// The store is published nowhere, and registered at its container's address.
	entries, _, err := e.consul.Client.Health().Service("net-store", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("store registrations: %v, %v", entries, err)
	}
	reg := entries[0].Service
	for _, c := range e.containers(t) {
		if len(c.Ports) > 0 && c.Labels[hostd.LabelService] == "store" {
			t.Errorf("the internal store publishes ports: %+v", c.Ports)
		}
	}
	if reg.Address == "127.0.0.1" || reg.Meta[hostd.MetaIP] != reg.Address || reg.Port != 8080 {
		t.Errorf("store registered at %s:%d (meta ip %s): want its container's address and port", reg.Address, reg.Port, reg.Meta[hostd.MetaIP])
	}

	// Another formation's container (the preview's) reaches neither the store's container,
	// nor web's proxy, nor net's store by the name it has for its own store.
	info, err := e.docker.Client.NetworkInspect(ctx, names.NetworkName(e.hostID, "net"), network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gateway := info.IPAM.Config[0].Gateway
	for _, u := range []string{"http://" + net.JoinHostPort(reg.Address, "8080") + "/", "http://" + net.JoinHostPort(gateway, "7000") + "/", "http://store:7000/"} {
		if got := fetch(otherAddr, u); !strings.HasPrefix(got, "error:") {
			t.Errorf("a container of another formation fetched %s: %q", u, got)
		}
	}

	// The mesh refuses a client whose certificate the Connect CA did not sign.
	if err := testenv.SelfSignedMeshCall(reg.Meta[hostd.MetaMesh], reg.Meta["instance"], 8080); err == nil {
		t.Error("the mesh answered a client with a self-signed certificate")
	}

	// A second store instance, on host A: web's calls reach it as soon as Consul has it
	// passing.
	second := e.release(t, "store two", func(r *state.Release) {
		r.Formation, r.Service, r.Internal = "net", "store", true
		r.Siblings = siblings("web", 8080, 8080)
	})
	assignTo(t, e, e.hostID, append(append(instances(web, 1), instances(other, 1)...), instances(second, 1)...))
	testenv.Eventually(t, 60*time.Second, "two store instances passing", func() bool { return len(e.passing("net-store")) == 2 })
	passing := time.Now()
	testenv.Eventually(t, 10*time.Second, "web reaching the new store instance", func() bool {
		return fetch(webAddr, "http://store:7000/") == "200 store two"
	})
	testenv.Report(t, "siblings-follow", fmt.Sprintf("sibling proxy: a new instance got its first call %s after Consul listed it passing (target < 1s; includes the test's polling)",
		time.Since(passing).Round(time.Millisecond)))
}

// A formation network of this host that no assignment needs any more, left while the
// daemon was down, is removed once the daemon runs again; another host's is left alone,
// and the network of a formation the host runs stays.
func TestNetworkLeftWhileDownIsRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	create := func(host, formation string) string {
		name := names.NetworkName(host, formation)
		_, err := e.docker.Client.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge",
			Labels: map[string]string{hostd.LabelManaged: "gilliam-sync", hostd.LabelHost: host, hostd.LabelFormation: formation}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.docker.Client.NetworkRemove(context.Background(), name) })
		return name
	}
	left := create(e.hostID, "gone")
	others := create(e.hostID+"-other", "gone")

	web := e.release(t, "web", nil)
	e.assign(t, instances(web, 1))
	e.run(t, e.config(t), nil)
	exists := func(name string) bool {
		_, err := e.docker.Client.NetworkInspect(ctx, name, network.InspectOptions{})
		return err == nil
	}
	testenv.Eventually(t, time.Minute, "the network left behind removed", func() bool { return !exists(left) })
	testenv.Eventually(t, time.Minute, "the running formation's network", func() bool {
		return exists(names.NetworkName(e.hostID, web.Formation)) && len(e.passing(state.ServiceName(web.Formation, web.Service))) == 1
	})
	if !exists(others) {
		t.Error("another host's network was removed")
	}
}
