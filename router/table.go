package router

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// An Instance is one registration of a service instance, as the router sees it in Consul.
type Instance struct {
	ID        string // the registration's ID
	Formation string
	Service   string
	Internal  bool
	Addr      string // host:port
	Passing   bool   // every check of the instance (and of its node) passes
}

// A Route is where one host name goes: a formation's service and its passing instances.
// A route with no backend answers 503 naming the service.
type Route struct {
	Host      string
	Formation string
	Service   string
	Backends  []string // host:port of the passing instances, sorted
	next      atomic.Uint64
}

// start returns the route's round-robin cursor and moves it on.
func (r *Route) start() uint64 { return r.next.Add(1) - 1 }

// A Table maps host names to routes. It is immutable once built: a change builds a new
// table and swaps it in whole.
type Table struct {
	routes map[string]*Route
	// Built is when the table was made; Problems are what building it refused, for the log.
	Built    time.Time
	Problems []string
}

// Lookup returns the route of a request's Host (any port, case, or trailing dot) or nil.
func (t *Table) Lookup(host string) *Route {
	if t == nil {
		return nil
	}
	if r, ok := t.routes[host]; ok { // the common case: already lowercase, no port
		return r
	}
	return t.routes[NormalizeHost(host)]
}

// An Entry is one host name of a table and its route; several names may share a route.
type Entry struct {
	Host  string
	Route *Route
}

// Entries returns the table's host names and their routes, sorted by host name.
func (t *Table) Entries() []Entry {
	if t == nil {
		return nil
	}
	out := make([]Entry, 0, len(t.routes))
	for h, r := range t.routes {
		out = append(out, Entry{h, r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// Len is the number of host names routed.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

// NormalizeHost is a Host header as a table key: without port or trailing dot, lowercase.
func NormalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// ServiceHost is the host name of a formation's service: <service>.<formation>.<domain>.
// A preview formation is named <formation>-pr-<N>, so its services get
// <service>.<formation>-pr-<N>.<domain>.
func ServiceHost(service, formation, domain string) string {
	return service + "." + formation + "." + domain
}

// FormationHost is the host name of a formation's web service: <formation>.<domain>.
func FormationHost(formation, domain string) string { return formation + "." + domain }

// WebService is the service named web: the formation's web service when its routes name
// none.
const WebService = "web"

// BuildTable makes the routing table from every instance in Consul (passing or not: a
// service whose instances all fail still has its routes, answering 503) and the routes
// documents of the formations. Internal services get no route. A custom domain claimed by
// two formations goes to the older claim, and a custom domain that is also a generated
// name is refused; both are listed in Problems.
func BuildTable(domain string, instances []Instance, routes []*state.Routes, now time.Time) *Table {
	domain = NormalizeHost(domain)
	t := &Table{routes: map[string]*Route{}, Built: now}
	type key struct{ formation, service string }
	services := map[key]*Route{}
	formations := map[string]bool{}
	for _, in := range instances {
		if in.Internal || in.Formation == "" || in.Service == "" {
			continue
		}
		k := key{in.Formation, in.Service}
		r := services[k]
		if r == nil {
			r = &Route{Host: ServiceHost(in.Service, in.Formation, domain), Formation: in.Formation, Service: in.Service}
			services[k] = r
			t.routes[r.Host] = r
		}
		formations[in.Formation] = true
		if in.Passing {
			r.Backends = append(r.Backends, in.Addr)
		}
	}
	for _, r := range services {
		sort.Strings(r.Backends)
		r.Backends = dedupe(r.Backends)
	}

	web := map[string]string{}
	for f := range formations {
		if _, ok := services[key{f, WebService}]; ok {
			web[f] = WebService
		}
	}
	byAge := append([]*state.Routes(nil), routes...)
	sort.SliceStable(byAge, func(i, j int) bool { return byAge[i].Index < byAge[j].Index })
	for _, rs := range byAge {
		if rs.Web != "" {
			web[rs.Formation] = rs.Web
		}
	}
	// The web service's route, at <formation>.<domain>: shared with <web>.<formation>.<domain>
	// when it has instances, so both names go round the same cursor.
	webRoute := func(f string) *Route {
		s := web[f]
		if r := services[key{f, s}]; r != nil {
			return r
		}
		r := &Route{Host: ServiceHost(s, f, domain), Formation: f, Service: s}
		services[key{f, s}] = r
		t.routes[r.Host] = r
		return r
	}
	for f, s := range web {
		if s == "" {
			continue
		}
		t.routes[FormationHost(f, domain)] = webRoute(f)
	}
	claimed := map[string]string{}
	for _, rs := range byAge {
		for _, d := range rs.Domains {
			d = NormalizeHost(d)
			if owner, ok := claimed[d]; ok {
				if owner != rs.Formation {
					t.Problems = append(t.Problems, fmt.Sprintf("domain %s: claimed by formation %s and, later, by %s; it stays %s's", d, owner, rs.Formation, owner))
				}
				continue
			}
			if r, ok := t.routes[d]; ok {
				t.Problems = append(t.Problems, fmt.Sprintf("domain %s of formation %s: it is the name of %s.%s already", d, rs.Formation, r.Service, r.Formation))
				continue
			}
			if web[rs.Formation] == "" {
				t.Problems = append(t.Problems, fmt.Sprintf("domain %s of formation %s: the formation has no web service to serve it", d, rs.Formation))
				continue
			}
			claimed[d] = rs.Formation
			t.routes[d] = webRoute(rs.Formation)
		}
	}
	sort.Strings(t.Problems)
	return t
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
