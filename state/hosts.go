package state

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// Host is a machine that runs instances, as its host daemon registered it.
type Host struct {
	ID       string            `json:"id"`
	Address  string            `json:"address"`
	Capacity Resources         `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Passing is whether the host's TTL check passes now.
	Passing bool `json:"passing"`
	// Node is the Consul node its registration lives on; NodeDown says Consul's gossip
	// finds that node failed (serfHealth critical): the machine, or its network, is gone,
	// not just the host daemon.
	Node     string `json:"node,omitempty"`
	NodeDown bool   `json:"node_down,omitempty"`
}

const labelMetaPrefix = "label-"

// HostRegistration is the Consul registration of a host daemon's liveness service: meta
// carries its capacity and labels, the TTL check must be renewed every ttl, and a host gone
// for longer than deregisterAfter leaves the catalog.
// It is the registration of the default installation (gilliam/); Store.HostRegistration
// gives that of the store's.
func HostRegistration(h Host, ttl, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	return hostRegistration(names.DefaultInstallation, h, ttl, deregisterAfter)
}

// HostRegistration is the registration of a host of the store's installation.
func (s *Store) HostRegistration(h Host, ttl, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	return hostRegistration(s.Installation(), h, ttl, deregisterAfter)
}

// HostCheckID is the ID of a host's TTL check in the store's installation.
func (s *Store) HostCheckID(host string) string { return names.HostCheckIDIn(s.Installation(), host) }

// Installation names the store's installation (see names.Installation).
func (s *Store) Installation() string { return names.Installation(s.prefix) }

func hostRegistration(installation string, h Host, ttl, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	meta := map[string]string{
		"host":                 h.ID,
		"cpu":                  strconv.FormatInt(h.Capacity.CPU, 10),
		"memory":               strconv.FormatInt(h.Capacity.Memory, 10),
		names.MetaInstallation: installation,
	}
	for k, v := range h.Labels {
		meta[labelMetaPrefix+k] = v
	}
	return &api.AgentServiceRegistration{
		ID:      names.HostServiceIDIn(installation, h.ID),
		Name:    HostService,
		Tags:    []string{names.InstallationTag(installation)},
		Address: h.Address,
		Meta:    meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        names.HostCheckIDIn(installation, h.ID),
			Name:                           "host daemon " + h.ID + " alive",
			TTL:                            ttl.String(),
			DeregisterCriticalServiceAfter: deregisterAfter.String(),
		},
	}
}

// Hosts lists the hosts in the catalog, passing or not, sorted by ID.
func (s *Store) Hosts(ctx context.Context) ([]Host, error) {
	hosts, _, err := s.WatchHosts(ctx, 0, 0)
	return hosts, err
}

// WatchHosts is Hosts as a blocking query: with index above 0 it returns when the hosts'
// registrations or checks change after index, or after wait; it returns the new index.
func (s *Store) WatchHosts(ctx context.Context, index uint64, wait time.Duration) ([]Host, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	entries, meta, err := s.client.Health().Service(HostService, "", false, q)
	if err != nil {
		return nil, 0, fmt.Errorf("list hosts: %w", err)
	}
	hosts := make([]Host, 0, len(entries))
	for _, e := range entries {
		h := Host{ID: e.Service.Meta["host"], Address: e.Service.Address, Labels: map[string]string{}, Node: e.Node.Node}
		if h.ID == "" || !s.ours(e.Service.Meta) {
			continue // another installation's host
		}
		h.Capacity.CPU, _ = strconv.ParseInt(e.Service.Meta["cpu"], 10, 64)
		h.Capacity.Memory, _ = strconv.ParseInt(e.Service.Meta["memory"], 10, 64)
		for k, v := range e.Service.Meta {
			if label, ok := strings.CutPrefix(k, labelMetaPrefix); ok {
				h.Labels[label] = v
			}
		}
		h.Passing = e.Checks.AggregatedStatus() == api.HealthPassing
		for _, c := range e.Checks {
			if c.CheckID == "serfHealth" && c.Status == api.HealthCritical {
				h.NodeDown = true
			}
		}
		hosts = append(hosts, h)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].ID < hosts[j].ID })
	return hosts, meta.LastIndex, nil
}

// InstanceCheck is the health of one instance registration in the catalog.
type InstanceCheck struct {
	Instance, Host string
	// Node is the Consul node the registration lives on; Registration its service ID.
	Node, Registration string
	// Passing is true when every check of the registration, and of its node, passes.
	Passing bool
}

// InstanceHealth reads the health of every instance registration that has a check, in
// one request (a blocking query when index is above 0), keyed by registration ID.
// Registrations without a check (check: none) are not in it.
func (s *Store) InstanceHealth(ctx context.Context, index uint64, wait time.Duration) (map[string]InstanceCheck, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	checks, meta, err := s.client.Health().State(api.HealthAny, q)
	if err != nil {
		return nil, 0, fmt.Errorf("read health: %w", err)
	}
	nodeOK := map[string]bool{}
	for _, c := range checks {
		if c.ServiceID == "" {
			ok, seen := nodeOK[c.Node]
			nodeOK[c.Node] = (ok || !seen) && c.Status == api.HealthPassing
		}
	}
	out := map[string]InstanceCheck{}
	for _, c := range checks {
		instance, host, ok := ParseRegistrationID(c.ServiceID)
		if !ok || names.InstallationOfTags(c.ServiceTags) != s.Installation() {
			continue // not an instance, or another installation's
		}
		ic, seen := out[c.ServiceID]
		if !seen {
			ic = InstanceCheck{Instance: instance, Host: host, Node: c.Node, Registration: c.ServiceID, Passing: true}
			if ok, known := nodeOK[c.Node]; known && !ok {
				ic.Passing = false
			}
		}
		ic.Passing = ic.Passing && c.Status == api.HealthPassing
		out[c.ServiceID] = ic
	}
	return out, meta.LastIndex, nil
}

// WaitLeftCatalog waits, at most limit, until the catalog (what the servers answer, and so
// what routers and discovery see) no longer lists the registration id of service: an agent
// applies a deregistration at once but passes it to the servers a little later.
func (s *Store) WaitLeftCatalog(ctx context.Context, service, id string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var index uint64
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: limit}).WithContext(ctx)
		entries, meta, err := s.client.Catalog().Service(service, "", q)
		if err != nil {
			return fmt.Errorf("wait for %s to leave the catalog: %w", id, err)
		}
		listed := false
		for _, e := range entries {
			listed = listed || e.ServiceID == id
		}
		if !listed {
			return nil
		}
		index, _ = NextIndex(index, meta.LastIndex)
	}
}

// ours says whether a registration's meta names the store's installation. One that names
// none was made before installations were named: the default installation's.
func (s *Store) ours(meta map[string]string) bool {
	return names.InstallationOf(meta[names.MetaInstallation]) == s.Installation()
}
