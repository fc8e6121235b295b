package state

import (
	"context"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// DeregisterHost removes from the catalog every registration a host daemon made for host
// (its liveness service and its instances: the services whose meta names the host), on
// whichever node holds them, and returns how many it removed.
//
// It is for the control plane's leader, once the host is dead: its registrations live in
// the Consul agent of its machine, and when the machine dies with its agent, nothing else
// removes them (DeregisterCriticalServiceAfter is run by that agent; Consul reaps a failed
// node after 72 hours). A host that was only cut off registers them again when its agent
// is back (the agent's anti-entropy), and its daemon then removes the instances that moved.
// Catalog writes need node and service write in Consul's ACLs.
func (s *Store) DeregisterHost(ctx context.Context, host string) (int, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	entries, _, err := s.client.Catalog().Service(HostService, "", q)
	if err != nil {
		return 0, fmt.Errorf("deregister host %s: find its node: %w", host, err)
	}
	nodes := map[string]bool{}
	for _, e := range entries {
		if e.ServiceMeta["host"] == host && s.ours(e.ServiceMeta) {
			nodes[e.Node] = true
		}
	}
	removed := 0
	for node := range nodes {
		services, _, err := s.client.Catalog().NodeServiceList(node, q)
		if err != nil {
			return removed, fmt.Errorf("deregister host %s: list node %s: %w", host, node, err)
		}
		if services == nil {
			continue
		}
		for _, svc := range services.Services {
			if svc.Meta["host"] != host || !s.ours(svc.Meta) {
				continue
			}
			_, err := s.client.Catalog().Deregister(&api.CatalogDeregistration{Node: node, ServiceID: svc.ID},
				(&api.WriteOptions{}).WithContext(ctx))
			if err != nil {
				return removed, fmt.Errorf("deregister host %s: service %s on node %s: %w", host, svc.ID, node, err)
			}
			removed++
		}
	}
	return removed, nil
}
