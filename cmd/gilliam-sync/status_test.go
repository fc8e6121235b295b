package main

import (
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// What status prints for the cases a person must notice: a preview, a pin, a failed
// roll-out, a crash loop with its last lines, an instance that cannot be placed.
func TestPrintStatus(t *testing.T) {
	views := []formationView{{
		Name: "shop-pr-7", Preview: &state.Preview{Of: "shop", PR: 7, TTL: 72 * time.Hour, Updated: time.Now()},
		Repo: "https://git.example.com/shop.git", Ref: "refs/pull/7/head", Commit: "0123456789abcdef", Deployed: "0123456789abcdef",
		Forge: []state.ForgeDelivery{
			{What: "gilliam/shop-pr-7", Commit: "0123456789abcdef", State: "success", Delivered: true},
			{What: "pull request 7 comment (shop-pr-7)", Error: "POST /repos/acme/shop/issues/7/comments: 403 Resource not accessible by integration",
				Attempts: 4, Since: time.Now().Add(-time.Minute)},
		},
		Services: []serviceView{{
			Name: "web", Scale: 2, Deployments: []state.Deployment{{Release: "aaaaaaaaaaaaaaaa", Scale: 2}},
			Latest: "bbbbbbbbbbbbbbbb", Pinned: "aaaaaaaaaaaaaaaa",
			Instances: []instanceView{
				{ID: "shop-pr-7-web-aaaaaaaa-0", Host: "h1", State: "exited", Health: "critical", Restarts: 4, CrashLoop: true, ExitCode: 3,
					Logs: []string{"panic: no DATABASE_URL"}},
				{ID: "shop-pr-7-web-aaaaaaaa-1", State: "unplaced", Health: "-", Error: "cannot be placed: memory exhausted on 3 hosts"},
			},
		}},
	}}
	var b strings.Builder
	printStatus(&b, views)
	out := b.String()
	for _, want := range []string{
		"preview of shop for pull request 7",
		"pinned to aaaaaaaaaaaa by a rollback",
		"crash-loop (exit 3)",
		"panic: no DATABASE_URL",
		"cannot be placed: memory exhausted on 3 hosts",
		"forge: gilliam/shop-pr-7 success on 0123456789ab: delivered",
		"forge: pull request 7 comment (shop-pr-7): failing since 1m0s ago (4 attempts): POST /repos/acme/shop/issues/7/comments: 403",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
}
