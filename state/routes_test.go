package state_test

import (
	"context"
	"errors"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Routes: a domain belongs to one formation; the same routes are not written twice; a
// formation's deletion takes its routes and not those of a formation whose name it
// prefixes (hello and hello-pr-1).
func TestRoutes(t *testing.T) {
	c := testenv.NewConsul(t)
	s := state.NewStore(c.Client, "")
	ctx := context.Background()
	put := func(r *state.Routes) error { return s.PutRoutes(ctx, r) }
	if err := put(&state.Routes{Formation: "hello", Web: "web", Domains: []string{"hello.example.com"}}); err != nil {
		t.Fatal(err)
	}
	if err := put(&state.Routes{Formation: "hello-pr-1", Web: "web"}); err != nil {
		t.Fatal(err)
	}
	err := put(&state.Routes{Formation: "shop", Domains: []string{"shop.example.com", "hello.example.com"}})
	if !errors.Is(err, state.ErrDomainClaimed) {
		t.Fatalf("a second claim: %v, want ErrDomainClaimed", err)
	}
	before := s.Writes()
	if err := put(&state.Routes{Formation: "hello", Web: "web", Domains: []string{"hello.example.com"}}); err != nil {
		t.Fatal(err)
	}
	if after := s.Writes(); after != before {
		t.Errorf("unchanged routes written again: %+v -> %+v", before, after)
	}
	if err := s.DeleteFormation(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	all, _, err := s.WatchRoutes(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Formation != "hello-pr-1" || all[0].Index == 0 {
		t.Errorf("after deleting hello: %+v, want hello-pr-1's routes only", all)
	}
}
