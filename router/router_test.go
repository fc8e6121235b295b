package router

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Routes come from Consul: every service that is not internal at
// <service>.<formation>.localhost, the web service at <formation>.localhost, previews
// alike; failing instances get no traffic; a service with none passing answers 503 naming
// it; an unknown host 404 naming nothing; a torn-down preview is gone (404).
func TestRoutesFromConsul(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)

	web1, web2 := newBackend(t, "web1", nil), newBackend(t, "web2", nil)
	api1, db := newBackend(t, "api1", nil), newBackend(t, "db1", nil)
	pr := newBackend(t, "pr", nil)
	web1.register(t, c.Client, "hello", "web", regOpts{})
	web2.register(t, c.Client, "hello", "web", regOpts{})
	api1.register(t, c.Client, "hello", "api", regOpts{})
	db.register(t, c.Client, "hello", "db", regOpts{internal: true})
	pr.register(t, c.Client, "hello-pr-3", "web", regOpts{})
	// Another installation on the same Consul runs a formation of the same name: never routed.
	stranger := newBackend(t, "stranger", nil)
	stranger.register(t, c.Client, "hello", "web", regOpts{installation: "teams-b"})

	e.waitBackends("hello.localhost", 2)
	e.waitBackends("web.hello-pr-3.localhost", 1)
	e.waitBackends("api.hello.localhost", 1)

	seen := map[string]bool{}
	for range 4 {
		code, body := e.get("hello.localhost", "/")
		if code != 200 {
			t.Fatalf("hello.localhost: %d %s", code, body)
		}
		seen[strings.TrimSpace(body)] = true
	}
	if !seen["web1"] || !seen["web2"] {
		t.Errorf("round robin over web1 and web2 reached %v", seen)
	}
	for host, want := range map[string]string{
		"web.hello.localhost:80": "web1|web2", "api.hello.localhost": "api1",
		"hello-pr-3.localhost": "pr", "web.hello-pr-3.localhost": "pr",
	} {
		if code, body := e.get(host, "/"); code != 200 || !strings.Contains(want, strings.TrimSpace(body)) {
			t.Errorf("%s: %d %q, want 200 from %s", host, code, body, want)
		}
	}
	if code, body := e.get("db.hello.localhost", "/"); code != 404 || strings.Contains(body, "hello") {
		t.Errorf("internal service: %d %q, want a 404 naming no formation", code, body)
	}
	if code, body := e.get("nothing.localhost", "/"); code != 404 || !strings.Contains(body, "Nothing is deployed at this address") {
		t.Errorf("unknown host: %d %q", code, body)
	}

	// Failing: out of the table; all failing: 503 naming formation and service.
	setCheck(t, c.Client, web1, api.HealthCritical)
	e.waitBackends("hello.localhost", 1)
	for range 4 {
		if code, body := e.get("hello.localhost", "/"); code != 200 || strings.TrimSpace(body) != "web2" {
			t.Fatalf("with web1 failing: %d %q, want web2", code, body)
		}
	}
	setCheck(t, c.Client, api1, api.HealthCritical)
	e.waitBackends("api.hello.localhost", 0)
	code, body := e.get("api.hello.localhost", "/")
	if code != 503 || !strings.Contains(body, "Service api of formation hello has no healthy instance") {
		t.Errorf("no passing instance: %d %q", code, body)
	}

	// The preview is torn down: its names are gone.
	pr.deregister(t, c.Client)
	testenv.Eventually(t, 10*time.Second, "preview routes gone", func() bool {
		return e.router.Table().Lookup("hello-pr-3.localhost") == nil
	})
	if code, _ := e.get("hello-pr-3.localhost", "/"); code != 404 {
		t.Errorf("torn-down preview: %d, want 404", code)
	}
}

// setCheck makes an instance's health check (HTTP, every 200ms) see status.
func setCheck(t *testing.T, c *api.Client, b *backend, status string) {
	b.failing.Store(status != api.HealthPassing)
}

// Custom domains and the web service come from the formation's routes in KV; a domain
// claimed by a second formation is refused by the store, with both named.
func TestRoutesDocument(t *testing.T) {
	c := testenv.NewConsul(t)
	store := state.NewStore(c.Client, "")
	e := newEnv(t, c.Client, func(cfg *Config) { cfg.Domain = "apps.test" })
	front := newBackend(t, "front", nil)
	front.register(t, c.Client, "shop", "front", regOpts{})
	e.waitBackends("front.shop.apps.test", 1)
	if e.router.Table().Lookup("shop.apps.test") != nil {
		t.Fatal("shop.apps.test routed before the routes name a web service")
	}
	ctx := context.Background()
	if err := store.PutRoutes(ctx, &state.Routes{Formation: "shop", Web: "front", Domains: []string{"shop.example.com"}}); err != nil {
		t.Fatal(err)
	}
	e.waitBackends("shop.example.com", 1)
	e.waitBackends("shop.apps.test", 1)
	if code, body := e.get("shop.example.com", "/"); code != 200 || strings.TrimSpace(body) != "front" {
		t.Errorf("custom domain: %d %q", code, body)
	}
	err := store.PutRoutes(ctx, &state.Routes{Formation: "other", Domains: []string{"SHOP.example.com"}})
	if err == nil || !strings.Contains(err.Error(), "domain SHOP.example.com is already formation shop's") {
		t.Errorf("second claim: %v", err)
	}
	if err := store.DeleteFormation(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "custom domain gone with the formation's routes", func() bool {
		return e.router.Table().Lookup("shop.example.com") == nil
	})
}

// A request goes to another instance when its connection failed before a byte was
// written (Flynn's TestErrorAfterConnOnlyHitsOneBackend), and a replayable one (a bodiless
// GET) also when the instance hung up without a byte of answer, once: a POST that
// reached an instance is never sent to another.
func TestRetryOnlyBeforeAnyByteWritten(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)

	// A dead instance: its port refuses connections. Every request, POSTs with their
	// body included, reaches the live one.
	live := newBackend(t, "live", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "live %s", b)
	}))
	dead := newBackend(t, "dead", nil)
	live.register(t, c.Client, "retry", "web", regOpts{ttl: true})
	dead.register(t, c.Client, "retry", "web", regOpts{ttl: true})
	e.waitBackends("retry.localhost", 2)
	dead.srv.Close()
	for i := range 6 {
		resp, err := e.do("POST", "retry.localhost", "/", strings.NewReader(fmt.Sprint("body", i)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprint("live body", i) {
			t.Fatalf("request %d with a dead instance: %d %q", i, resp.StatusCode, b)
		}
	}
	if n := e.router.Stats().Retries.Load(); n < 2 {
		t.Errorf("retries = %d, want one per request that went to the dead instance first (about 3)", n)
	}

	// An instance that takes the connection, reads the request and hangs up. A POST with
	// a body was written, so it fails (502) and never reaches the other instance; a GET
	// goes on to the other one.
	hung := hangupServer(t)
	other := newBackend(t, "other", nil)
	registerAddr(t, c.Client, "once", "web", "hangup", hung.addr)
	other.register(t, c.Client, "once", "web", regOpts{ttl: true})
	e.waitBackends("once.localhost", 2)
	status := map[string]map[int]int{"GET": {}, "POST": {}}
	for i := range 12 {
		method := []string{"GET", "POST"}[i/2%2] // each method starts at each instance in turn
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("x")
		}
		resp, err := e.do(method, "once.localhost", "/", body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		status[method][resp.StatusCode]++
	}
	hungGET, hungPOST := hung.count("GET"), hung.count("POST")
	if status["GET"][200] != 6 || hungGET == 0 {
		t.Errorf("GETs: statuses %v, %d reached the hang-up instance: every one must be answered by the other", status["GET"], hungGET)
	}
	if status["POST"][502] != hungPOST || status["POST"][200]+hungPOST != 6 || hungPOST == 0 ||
		other.hits.get() != 6+status["POST"][200] {
		t.Errorf("POSTs: statuses %v, %d reached the hang-up instance, the other instance reached %d times in all: "+
			"a POST that reached the hang-up instance must fail there and reach nothing else", status["POST"], hungPOST, other.hits.get())
	}

	// Instances that all hang up: a GET is sent again once, not to every instance (a
	// request that kills instances takes two at most).
	all := []*hangup{hangupServer(t), hangupServer(t), hangupServer(t)}
	for i, h := range all {
		registerAddr(t, c.Client, "death", "web", fmt.Sprint("h", i), h.addr)
	}
	e.waitBackends("death.localhost", len(all))
	if code, _ := e.get("death.localhost", "/"); code != 502 {
		t.Errorf("GET to instances that all hang up: %d, want 502", code)
	}
	reached := 0
	for _, h := range all {
		reached += h.count("GET")
	}
	if reached != 2 {
		t.Errorf("a GET every instance hangs up on reached %d instances, want 2", reached)
	}
}

// hangup is an instance that reads each request, counts it by method and closes the
// connection without a byte of answer.
type hangup struct {
	addr string
	mu   sync.Mutex
	seen map[string]int
}

func (h *hangup) count(method string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[method]
}

func hangupServer(t *testing.T) *hangup {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h := &hangup{addr: l.Addr().String(), seen: map[string]int{}}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			if req, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				h.mu.Lock()
				h.seen[req.Method]++
				h.mu.Unlock()
			}
			conn.Close()
		}
	}()
	return h
}

// registerAddr registers an address with a passing TTL check.
func registerAddr(t *testing.T, c *api.Client, formation, service, name, addr string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	id := formation + "-" + service + "-" + name
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: formation + "-" + service, Address: host, Port: p, Tags: []string{TagInstance, names.InstallationTag(names.DefaultInstallation)},
		Meta:  map[string]string{MetaFormation: formation, MetaService: service},
		Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Error(err) // Error, not Fatal: it may run on a goroutine of its own
	}
}

// The instance sees the name it was called by and the forwarding headers; a request ID is
// kept when the client sent one, made otherwise, and returned; the access log has a line.
func TestHeadersAndAccessLog(t *testing.T) {
	c := testenv.NewConsul(t)
	var logged bytes.Buffer
	var logMu sync.Mutex
	e := newEnv(t, c.Client, func(cfg *Config) {
		cfg.AccessLog = slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logged}, nil))
	})
	echo := newBackend(t, "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := map[string]string{"Host": r.Host}
		for _, k := range []string{"X-Request-Id", "X-Request-Start", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Accept-Encoding"} {
			h[k] = r.Header.Get(k)
		}
		_ = json.NewEncoder(w).Encode(h)
	}))
	echo.register(t, c.Client, "hdr", "web", regOpts{ttl: true})
	e.waitBackends("hdr.localhost", 1)

	before := time.Now().UnixMilli()
	for _, sent := range []string{"", "abc-123"} {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/x", nil)
		req.Host = "hdr.localhost"
		req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim: not kept
		if sent != "" {
			req.Header.Set("X-Request-Id", sent)
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if h["Host"] != "hdr.localhost" || h["X-Forwarded-Host"] != "hdr.localhost" ||
			h["X-Forwarded-Proto"] != "http" || h["X-Forwarded-For"] != "127.0.0.1" {
			t.Errorf("headers at the instance: %v", h)
		}
		var start int64
		if _, err := fmt.Sscanf(h["X-Request-Start"], "t=%d", &start); err != nil || start < before || start > time.Now().UnixMilli() {
			t.Errorf("X-Request-Start %q: want t=<unix ms> of now", h["X-Request-Start"])
		}
		id := h["X-Request-Id"]
		if sent != "" && id != sent || sent == "" && len(id) != 32 {
			t.Errorf("X-Request-Id sent %q, instance got %q", sent, id)
		}
		if got := resp.Header.Get("X-Request-Id"); got != id {
			t.Errorf("X-Request-Id returned %q, want %q", got, id)
		}
	}
	// A client that asks for no compression gets none asked of the instance either.
	plain := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
	req.Host = "hdr.localhost"
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h["Accept-Encoding"] != "" {
		t.Errorf("the router asked the instance for %q; the client asked for no encoding", h["Accept-Encoding"])
	}

	logMu.Lock()
	defer logMu.Unlock()
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	var line map[string]any
	if len(lines) != 3 || json.Unmarshal([]byte(lines[1]), &line) != nil {
		t.Fatalf("access log: %q", logged.String())
	}
	if line["request_id"] != "abc-123" || line["status"] != 200.0 || line["formation"] != "hdr" || line["service"] != "web" || line["host"] != "hdr.localhost" {
		t.Errorf("access log line: %v", line)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// When every instance of a route refuses the connection (the router's table lags behind a
// drain), the request waits up to RefusedWait for a newer table and tries the instances it
// lists; with none, it answers 502 after that wait.
func TestRefusedEverywhereWaitsForANewerTable(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)
	gone := newBackend(t, "gone", nil)
	gone.register(t, c.Client, "lag", "web", regOpts{ttl: true})
	e.waitBackends("lag.localhost", 1)
	gone.srv.Close()

	start := time.Now()
	if code, _ := e.get("lag.localhost", "/"); code != 502 {
		t.Fatalf("the only instance refuses and nothing replaces it: %d, want 502", code)
	}
	if waited := time.Since(start); waited < RefusedWait {
		t.Errorf("answered 502 after %s, before waiting RefusedWait (%s) for a newer table", waited, RefusedWait)
	}

	// The replacement is registered while the request waits.
	fresh := newBackend(t, "fresh", nil)
	registered := make(chan struct{})
	go func() {
		defer close(registered)
		time.Sleep(200 * time.Millisecond)
		registerAddr(t, c.Client, "lag", "web", "fresh", fresh.srv.Listener.Addr().String())
	}()
	code, body := e.get("lag.localhost", "/")
	<-registered
	if code != 200 || body != "fresh\n" {
		t.Errorf("a replacement listed while the request waited: %d %q, want 200 from it", code, body)
	}
}
