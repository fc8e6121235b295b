package router

import (
	"fmt"
	"net"
	"sort"
	"strconv"

	"github.com/hashicorp/consul/api"
)

// ConsulService is the Consul service routers register their listeners as, so that
// `gilliam-sync status` can print the URLs they serve.
const ConsulService = "gilliam-router"

// A Listener is where routers serve: scheme, domain and port.
type Listener struct {
	Scheme string `json:"scheme"`
	Domain string `json:"domain"`
	Port   int    `json:"port"`
}

// Register registers a router's listener on the local Consul agent under id, with a TCP
// check on it (critical for a minute: gone from the catalog, for a router that died
// without deregistering). It returns the deregistration.
func Register(client *api.Client, id, addr string, l Listener) (deregister func() error, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("register router %s: %w", addr, err)
	}
	check := host
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		check, host = "127.0.0.1", ""
	}
	err = client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: ConsulService, Address: host, Port: l.Port,
		Meta: map[string]string{"scheme": l.Scheme, "domain": l.Domain},
		Check: &api.AgentServiceCheck{TCP: net.JoinHostPort(check, strconv.Itoa(l.Port)), Interval: "10s", Timeout: "2s",
			DeregisterCriticalServiceAfter: "1m"},
	})
	if err != nil {
		return nil, fmt.Errorf("register router %s in consul: %w", id, err)
	}
	return func() error { return client.Agent().ServiceDeregister(id) }, nil
}

// Listeners are the distinct listeners of the routers in Consul's catalog, sorted.
func Listeners(client *api.Client) ([]Listener, error) {
	svcs, _, err := client.Catalog().Service(ConsulService, "", nil)
	if err != nil {
		return nil, fmt.Errorf("routers in consul: %w", err)
	}
	seen := map[Listener]bool{}
	var out []Listener
	for _, s := range svcs {
		l := Listener{Scheme: s.ServiceMeta["scheme"], Domain: s.ServiceMeta["domain"], Port: s.ServicePort}
		if l.Scheme == "" || l.Domain == "" || seen[l] {
			continue
		}
		seen[l] = true
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		if a.Scheme != b.Scheme {
			return a.Scheme > b.Scheme // https first
		}
		return a.Port < b.Port
	})
	return out, nil
}

// URLs are the URLs a service is served at by routers listening on ls: the formation's
// own name and its custom domains first when it is the web service, then its own name.
// An internal service has none.
func URLs(ls []Listener, formation, service string, internal, web bool, domains []string) []string {
	out := []string{}
	if internal {
		return out
	}
	for _, l := range ls {
		var hosts []string
		if web {
			hosts = append(hosts, FormationHost(formation, l.Domain))
			for _, d := range domains {
				hosts = append(hosts, NormalizeHost(d))
			}
		}
		hosts = append(hosts, ServiceHost(service, formation, l.Domain))
		for _, h := range hosts {
			out = append(out, l.url(h))
		}
	}
	return out
}

func (l Listener) url(host string) string {
	if l.Scheme == "http" && l.Port == 80 || l.Scheme == "https" && l.Port == 443 {
		return l.Scheme + "://" + host + "/"
	}
	return l.Scheme + "://" + host + ":" + strconv.Itoa(l.Port) + "/"
}
