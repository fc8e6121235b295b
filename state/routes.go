package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Routes is what the router needs of a formation beyond what its instances' registrations
// say: which service answers at the formation's own name, and the custom domains the
// formation owns. The control plane writes it at routes/<formation> from gilliam.yml, with
// PutRoutes; routers follow routes/ with a blocking query (WatchRoutes). It is kept apart
// from the desired state so that a router never reads, nor waits on, a document that
// changes with every roll-out step.
type Routes struct {
	Formation string `json:"formation"`
	// Web is the service served at <formation>.<domain> and at every custom domain: the one
	// gilliam.yml marks `web: true`, else the one named web, else "" (none).
	Web string `json:"web,omitempty"`
	// Domains are host names the formation owns (shop.example.com), lowercase. A domain
	// belongs to one formation: PutRoutes refuses a second claim.
	Domains []string  `json:"domains,omitempty"`
	Updated time.Time `json:"updated"`

	// Index is the document's CreateIndex, set when read: among conflicting claims that
	// got into Consul anyway (two writers racing), the router gives a domain to the oldest.
	Index uint64 `json:"-"`
}

func (s *Store) routesKey() string                { return s.prefix + "routes/" }
func (s *Store) routeKey(formation string) string { return s.routesKey() + formation }

// ErrDomainClaimed is what PutRoutes returns when another formation owns one of the domains.
var ErrDomainClaimed = errors.New("domain claimed by another formation")

// PutRoutes writes a formation's routes. A domain another formation already claims is
// refused with an error wrapping ErrDomainClaimed that names both: a person must remove it
// from one gilliam.yml; nothing is written then. Routes with the same content are not
// written again.
func (s *Store) PutRoutes(ctx context.Context, r *Routes) error {
	all, _, err := s.WatchRoutes(ctx, 0, 0)
	if err != nil {
		return err
	}
	for _, other := range all {
		if other.Formation == r.Formation {
			if sameRoutes(other, r) {
				return nil
			}
			continue
		}
		for _, d := range r.Domains {
			for _, od := range other.Domains {
				if strings.EqualFold(d, od) {
					return fmt.Errorf("routes of %s: domain %s is already formation %s's: %w", r.Formation, d, other.Formation, ErrDomainClaimed)
				}
			}
		}
	}
	if r.Updated.IsZero() {
		r.Updated = time.Now().UTC()
	}
	return s.put(ctx, s.routeKey(r.Formation), r, nil)
}

func sameRoutes(a, b *Routes) bool {
	if a.Web != b.Web || len(a.Domains) != len(b.Domains) {
		return false
	}
	for i := range a.Domains {
		if !strings.EqualFold(a.Domains[i], b.Domains[i]) {
			return false
		}
	}
	return true
}

// DeleteRoutes removes a formation's routes (DeleteFormation does too).
func (s *Store) DeleteRoutes(ctx context.Context, formation string) error {
	s.writes.add(1)
	if _, err := s.client.KV().Delete(s.routeKey(formation), (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete routes of %s: %w", formation, err)
	}
	return nil
}

// WatchRoutes lists every formation's routes, sorted by formation. With index non-zero it
// is a blocking query: it answers when routes/ changes past index, or after wait. The
// returned index is for the next call.
func (s *Store) WatchRoutes(ctx context.Context, index uint64, wait time.Duration) ([]*Routes, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	pairs, meta, err := s.client.KV().List(s.routesKey(), q)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", s.routesKey(), err)
	}
	out := make([]*Routes, 0, len(pairs))
	for _, p := range pairs {
		var r Routes
		if err := json.Unmarshal(p.Value, &r); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", p.Key, err)
		}
		r.Index = p.CreateIndex
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Formation < out[j].Formation })
	return out, meta.LastIndex, nil
}

// Prefix is the KV prefix the store works under, with its trailing slash.
func (s *Store) Prefix() string { return s.prefix }
