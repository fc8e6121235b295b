package router

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

func TestBuildTable(t *testing.T) {
	inst := func(f, s, addr string, passing bool) Instance {
		return Instance{ID: f + s + addr, Formation: f, Service: s, Addr: addr, Passing: passing}
	}
	instances := []Instance{
		inst("hello", "web", "127.0.0.1:2", true),
		inst("hello", "web", "127.0.0.1:1", true),
		inst("hello", "web", "127.0.0.1:3", false), // failing: no traffic
		inst("hello", "api", "127.0.0.1:4", true),
		{Formation: "hello", Service: "db", Addr: "127.0.0.1:5", Passing: true, Internal: true},
		inst("hello-pr-3", "web", "127.0.0.1:6", true),
		inst("shop", "front", "127.0.0.1:7", true),
		inst("down", "web", "127.0.0.1:8", false),
		{Addr: "127.0.0.1:9", Passing: true}, // not ours: no formation in meta
	}
	routes := []*state.Routes{
		{Formation: "shop", Web: "front", Domains: []string{"Shop.Example.com"}, Index: 10},
		{Formation: "hello", Domains: []string{"shop.example.com", "hello.example.com"}, Index: 20},
		{Formation: "api", Web: "web", Domains: []string{"api.hello.localhost"}, Index: 30},
	}
	tab := BuildTable("LocalHost.", instances, routes, time.Now())

	want := map[string]string{ // host -> formation/service backends
		"hello.localhost":          "hello/web 127.0.0.1:1,127.0.0.1:2",
		"web.hello.localhost":      "hello/web 127.0.0.1:1,127.0.0.1:2",
		"api.hello.localhost":      "hello/api 127.0.0.1:4",
		"hello-pr-3.localhost":     "hello-pr-3/web 127.0.0.1:6",
		"web.hello-pr-3.localhost": "hello-pr-3/web 127.0.0.1:6",
		"shop.localhost":           "shop/front 127.0.0.1:7",
		"front.shop.localhost":     "shop/front 127.0.0.1:7",
		"shop.example.com":         "shop/front 127.0.0.1:7",
		"hello.example.com":        "hello/web 127.0.0.1:1,127.0.0.1:2",
		"down.localhost":           "down/web ",
		"web.down.localhost":       "down/web ",
		"api.localhost":            "api/web ", // routes name a web service with no instance yet: 503, not 404
		"web.api.localhost":        "api/web ",
	}
	got := map[string]string{}
	for _, e := range tab.Entries() {
		r := e.Route
		got[e.Host] = r.Formation + "/" + r.Service + " " + strings.Join(r.Backends, ",")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("routes:\n got %v\nwant %v", got, want)
	}
	if tab.Lookup("HELLO.localhost.:8080") != tab.Lookup("web.hello.localhost") {
		t.Error("a Host with port, capitals and a trailing dot is not normalized")
	}
	if tab.Lookup("db.hello.localhost") != nil {
		t.Error("an internal service got a route")
	}
	wantProblems := []string{
		"domain api.hello.localhost of formation api: it is the name of api.hello already",
		"domain shop.example.com: claimed by formation shop and, later, by hello; it stays shop's",
	}
	if !reflect.DeepEqual(tab.Problems, wantProblems) {
		t.Errorf("problems:\n got %q\nwant %q", tab.Problems, wantProblems)
	}
}

func TestNextIndex(t *testing.T) {
	for _, c := range []struct {
		prev, got, next uint64
		changed         bool
	}{
		{0, 5, 5, true}, {5, 5, 5, false}, {5, 7, 7, true}, {7, 3, 0, false}, {0, 0, 1, true},
	} {
		if next, changed := nextIndex(c.prev, c.got); next != c.next || changed != c.changed {
			t.Errorf("nextIndex(%d, %d) = %d, %v; want %d, %v", c.prev, c.got, next, changed, c.next, c.changed)
		}
	}
}
