package state

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// HostService is the Consul service every host daemon registers for itself, with a TTL
// check it keeps passing: the catalog's list of hosts and their liveness.
const HostService = "gilliam-host"

// Host is a machine that runs instances, as its host daemon registered it.
type Host struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Capacity Resources         `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Passing is whether the host's TTL check passes now.
	Passing bool `json:"passing"`
}

const labelMetaPrefix = "label-"

// HostRegistration is the Consul registration of a host daemon's liveness service: meta
// carries its capacity and labels, the TTL check must be renewed every ttl, and a host gone
// for longer than deregisterAfter leaves the catalog.
func HostRegistration(h Host, ttl, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	meta := map[string]string{
		"host":   h.ID,
		"cpu":    strconv.FormatInt(h.Capacity.CPU, 10),
		"memory": strconv.FormatInt(h.Capacity.Memory, 10),
	}
	for k, v := range h.Labels {
		meta[labelMetaPrefix+k] = v
	}
	return &api.AgentServiceRegistration{
		ID:      HostServiceID(h.ID),
		Name:    HostService,
		Address: h.Address,
		Meta:    meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        HostCheckID(h.ID),
			Name:                           "host daemon " + h.ID + " alive",
			TTL:                            ttl.String(),
			DeregisterCriticalServiceAfter: deregisterAfter.String(),
		},
	}
}

// Hosts lists the hosts in the catalog, passing or not, sorted by ID.
func (s *Store) Hosts(ctx context.Context) ([]Host, error) {
	entries, _, err := s.client.Health().Service(HostService, "", false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	hosts := make([]Host, 0, len(entries))
	for _, e := range entries {
		h := Host{ID: e.Service.Meta["host"], Address: e.Service.Address, Labels: map[string]string{}}
		if h.ID == "" {
			continue
		}
		h.Capacity.CPU, _ = strconv.ParseInt(e.Service.Meta["cpu"], 10, 64)
		h.Capacity.Memory, _ = strconv.ParseInt(e.Service.Meta["memory"], 10, 64)
		for k, v := range e.Service.Meta {
			if label, ok := strings.CutPrefix(k, labelMetaPrefix); ok {
				h.Labels[label] = v
			}
		}
		h.Passing = e.Checks.AggregatedStatus() == api.HealthPassing
		hosts = append(hosts, h)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
	return hosts, nil
}
