package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A WebSocket upgrade passes through: the router answers 101 and then carries bytes both
// ways on the upgraded connection. A streamed response reaches the client chunk by chunk.
func TestWebSocketAndStreaming(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)
	release := make(chan struct{})
	ws := newBackend(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			fmt.Fprintln(w, "first")
			w.(http.Flusher).Flush()
			<-release
			fmt.Fprintln(w, "second")
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(brw, "echo "+line)
			brw.Flush()
		}
	}))
	ws.register(t, c.Client, "live", "web", regOpts{ttl: true})
	e.waitBackends("live.localhost", 1)

	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /socket HTTP/1.1\r\nHost: live.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	for _, msg := range []string{"one", "two"} {
		fmt.Fprintln(conn, msg)
		if got, err := br.ReadString('\n'); err != nil || got != "echo "+msg+"\n" {
			t.Fatalf("through the upgraded connection: %q %v", got, err)
		}
	}

	resp, err = e.do("GET", "live.localhost", "/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sr := bufio.NewReader(resp.Body)
	if line, err := sr.ReadString('\n'); err != nil || line != "first\n" {
		t.Fatalf("first chunk, before the instance sends the second: %q %v", line, err)
	}
	close(release)
	if rest, err := io.ReadAll(sr); err != nil || string(rest) != "second\n" {
		t.Fatalf("rest of the stream: %q %v", rest, err)
	}
}

// An instance that sends no headers within the first-byte timeout gets a 504; one whose
// response stops moving for the rolling timeout is cut; one that keeps moving may take
// longer than both.
func TestTimeouts(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, func(cfg *Config) {
		cfg.FirstByteTimeout = 300 * time.Millisecond
		cfg.RollingTimeout = 300 * time.Millisecond
	})
	slow := newBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/late":
			time.Sleep(time.Second)
		case "/stall":
			fmt.Fprintln(w, "start")
			w.(http.Flusher).Flush()
			time.Sleep(time.Second)
			fmt.Fprintln(w, "never")
		case "/trickle":
			for i := range 8 { // 1.6s in all, never 300ms without a byte
				fmt.Fprintln(w, i)
				w.(http.Flusher).Flush()
				time.Sleep(200 * time.Millisecond)
			}
		}
	}))
	slow.register(t, c.Client, "slow", "web", regOpts{ttl: true})
	e.waitBackends("slow.localhost", 1)

	if code, body := e.get("slow.localhost", "/late"); code != 504 || !strings.Contains(body, "Service web of formation slow did not answer in time") {
		t.Errorf("no first byte in time: %d %q", code, body)
	}
	resp, err := e.do("GET", "slow.localhost", "/stall", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(b) != "start\n" {
		t.Errorf("stalled response: %q, err %v: want the first line, then the connection cut", b, err)
	}
	if code, body := e.get("slow.localhost", "/trickle"); code != 200 || strings.Count(body, "\n") != 8 {
		t.Errorf("a response that keeps moving: %d %q", code, body)
	}
}

// Draining: when an instance leaves the passing set, new requests stop going to it at once,
// and a request it is serving finishes.
func TestDraining(t *testing.T) {
	c := testenv.NewConsul(t)
	e := newEnv(t, c.Client, nil)
	started := make(chan struct{})
	old := newBackend(t, "old", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			time.Sleep(1500 * time.Millisecond)
		}
		fmt.Fprintln(w, "old")
	}))
	old.register(t, c.Client, "drain", "web", regOpts{ttl: true})
	e.waitBackends("drain.localhost", 1)

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := e.do("GET", "drain.localhost", "/slow", nil)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		inflight <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	replacement := newBackend(t, "new", nil)
	replacement.register(t, c.Client, "drain", "web", regOpts{ttl: true})
	e.waitBackends("drain.localhost", 2)
	old.deregister(t, c.Client)
	e.waitBackends("drain.localhost", 1)
	before := old.hits.get()
	for range 10 {
		if code, body := e.get("drain.localhost", "/"); code != 200 || body != "new\n" {
			t.Fatalf("after the old instance left: %d %q", code, body)
		}
	}
	if old.hits.get() != before {
		t.Errorf("the old instance got %d new requests after it left", old.hits.get()-before)
	}
	if r := <-inflight; r.err != nil || r.code != 200 || r.body != "old\n" {
		t.Errorf("the in-flight request: %d %q %v", r.code, r.body, r.err)
	}
}
