package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	stdsync "sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// gilliam-sync router serves a formation registered the way hostd registers it at
// http://hello.localhost:<port>/, registers itself in Consul, and status lists the
// service's URLs (text and json, under urls); when it stops it deregisters.
func TestRouterCommandAndStatusURLs(t *testing.T) {
	c := testenv.NewConsul(t)
	inst := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from web") }))
	defer inst.Close()
	u, _ := url.Parse(inst.URL)
	port, _ := strconv.Atoi(u.Port())
	if err := c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "hello-web-0@h", Name: "hello-web", Address: u.Hostname(), Port: port, Tags: []string{router.TagInstance, names.InstallationTag(names.DefaultInstallation)},
		Meta: map[string]string{router.MetaFormation: "hello", router.MetaService: "web", "instance": "hello-web-0"},
	}); err != nil {
		t.Fatal(err)
	}
	store := state.NewStore(c.Client, "")
	ctx := context.Background()
	if err := store.PutDesired(ctx, &state.Desired{Formation: "hello", Services: map[string]state.DesiredService{
		"web": {Deployments: []state.Deployment{{Release: "r1", Scale: 1}}}}}, 0); err != nil {
		t.Fatal(err)
	}

	rctx, stop := context.WithCancel(ctx)
	stderr := &lockedBuilder{b: &strings.Builder{}}
	done := make(chan int)
	go func() {
		done <- run(rctx, []string{"router", "--consul", c.Addr, "--listen", "127.0.0.1:0", "--log-format", "json"}, io.Discard, stderr)
	}()
	var listeners []router.Listener
	testenv.Eventually(t, 10*time.Second, "the router registered in consul", func() bool {
		listeners, _ = router.Listeners(c.Client)
		return len(listeners) == 1
	})
	rport := listeners[0].Port
	want := fmt.Sprintf("http://hello.localhost:%d/", rport)
	testenv.Eventually(t, 10*time.Second, "the formation answering through the router", func() bool {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", rport), nil)
		req.Host = "hello.localhost"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b) == "hello from web"
	})

	var out strings.Builder
	if code := run(ctx, []string{"status", "hello", "--consul", c.Addr, "--output", "json"}, &out, io.Discard); code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	var views []formationView
	if err := json.Unmarshal([]byte(out.String()), &views); err != nil {
		t.Fatalf("status json: %v\n%s", err, out.String())
	}
	urls := views[0].Services[0].URLs
	if len(urls) != 2 || urls[0] != want || urls[1] != fmt.Sprintf("http://web.hello.localhost:%d/", rport) {
		t.Errorf("urls = %q, want %s first", urls, want)
	}
	out.Reset()
	run(ctx, []string{"status", "hello", "--consul", c.Addr}, &out, io.Discard)
	if !strings.Contains(out.String(), "url "+want) {
		t.Errorf("status text does not list %s:\n%s", want, out.String())
	}

	stop()
	if code := <-done; code != 0 {
		t.Errorf("router exit %d", code)
	}
	if l, _ := router.Listeners(c.Client); len(l) != 0 {
		t.Errorf("router still registered after it stopped: %v", l)
	}
	if !strings.Contains(stderr.String(), `"msg":"request"`) || !strings.Contains(stderr.String(), `"formation":"hello"`) {
		t.Errorf("no JSON access log line:\n%s", stderr.String())
	}
}

// lockedBuilder is a strings.Builder written from several goroutines.
type lockedBuilder struct {
	mu stdsync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
