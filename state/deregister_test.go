package state_test

import (
	"context"
	"sort"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A dead host's registrations, left in the catalog by its agent that died with it, are
// removed by DeregisterHost: its liveness service and its instances, and nothing else of
// its node or of another host's.
func TestDeregisterHostRemovesItsRegistrations(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	register := func(node, id, name, host string) {
		t.Helper()
		meta := map[string]string{}
		if host != "" {
			meta["host"] = host
		}
		_, err := c.Client.Catalog().Register(&api.CatalogRegistration{Node: node, Address: "10.0.0.1",
			Service: &api.AgentService{ID: id, Service: name, Meta: meta}}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	register("machine-9", state.HostServiceID("h9"), state.HostService, "h9")
	register("machine-9", "shop-web-1a2b3c4d-0@h9", "shop-web", "h9")
	register("machine-9", "node-exporter", "node-exporter", "") // not a host daemon's
	register("machine-8", state.HostServiceID("h8"), state.HostService, "h8")
	register("machine-8", "shop-web-1a2b3c4d-1@h8", "shop-web", "h8")

	n, err := s.DeregisterHost(context.Background(), "h9")
	if err != nil || n != 2 {
		t.Fatalf("DeregisterHost: %d removed, %v; want 2", n, err)
	}
	var left []string
	for _, node := range []string{"machine-9", "machine-8"} {
		list, _, err := c.Client.Catalog().NodeServiceList(node, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range list.Services {
			left = append(left, node+"/"+svc.ID)
		}
	}
	sort.Strings(left)
	want := []string{"machine-8/gilliam-host-h8", "machine-8/shop-web-1a2b3c4d-1@h8", "machine-9/node-exporter"}
	if len(left) != len(want) {
		t.Fatalf("left %v, want %v", left, want)
	}
	for i := range want {
		if left[i] != want[i] {
			t.Fatalf("left %v, want %v", left, want)
		}
	}
	// Again: nothing left to remove.
	if n, err := s.DeregisterHost(context.Background(), "h9"); err != nil || n != 0 {
		t.Fatalf("second DeregisterHost: %d, %v", n, err)
	}
}
