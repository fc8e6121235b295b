package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// gilliam-sync formations lists who owns each formation name; transfer gives a name to
// another repository, which the leader then deploys it from.
func TestFormationsTransfer(t *testing.T) {
	c := testenv.NewConsul(t)
	ctx := context.Background()
	store := state.NewStore(c.Client, "")
	if err := store.PutClaim(ctx, &state.Claim{Formation: "shop", Repo: gitwatch.CacheName("https://git.example/a.git"),
		URL: "https://git.example/a.git", File: "gilliam.yml"}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"formations", "--consul", c.Addr}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "shop\thttps://git.example/a.git\tgilliam.yml") {
		t.Fatalf("formations: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run(ctx, []string{"formations", "--consul", c.Addr, "transfer", "shop", "--to", "https://git.example/b.git", "--file", "deploy/gilliam.yml"}, &out, &errOut); code != 0 {
		t.Fatalf("transfer: %d %q", code, errOut.String())
	}
	claim, err := store.Claim(ctx, "shop")
	if err != nil || claim == nil || claim.Repo != gitwatch.CacheName("https://git.example/b.git") || claim.File != "deploy/gilliam.yml" {
		t.Fatalf("after the transfer: %+v %v", claim, err)
	}
	if code := run(ctx, []string{"formations", "--consul", c.Addr, "transfer", "shop"}, &out, &errOut); code != 2 {
		t.Fatalf("a transfer without --to: exit %d, want 2", code)
	}
}
