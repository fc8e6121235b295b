package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"time"
)

// request is what the router knows of one request on its way: the route, and for the
// access log the instance that answered and how many tried.
type request struct {
	route    *Route
	id       string
	start    time.Time
	backend  string
	attempts int
	err      error
}

type requestKey struct{}

func requestOf(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

// ServeHTTP routes one request by its Host.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.stats.Requests.Add(1)
	rq := &request{start: time.Now(), id: req.Header.Get("X-Request-Id")}
	if rq.id == "" {
		rq.id = newRequestID()
	}
	lw := &logWriter{ResponseWriter: w}
	if r.cfg.AccessLog != nil {
		defer r.accessLog(lw, req, rq)
	}
	if r.cfg.Metrics != nil {
		defer r.measure(lw, rq)
	}
	rq.route = r.Table().Lookup(req.Host)
	switch {
	case rq.route == nil:
		errorPage(lw, http.StatusNotFound, "No application here", "Nothing is deployed at this address.", rq.id)
		return
	case len(rq.route.Backends) == 0:
		lw.Header().Set("Retry-After", "1")
		errorPage(lw, http.StatusServiceUnavailable, "No healthy instance",
			fmt.Sprintf("Service %s of formation %s has no healthy instance right now.", rq.route.Service, rq.route.Formation), rq.id)
		return
	}
	r.proxy.ServeHTTP(lw, req.WithContext(context.WithValue(req.Context(), requestKey{}, rq)))
}

// rewrite sets the forwarding headers. The client's own X-Forwarded-* are dropped
// (ReverseProxy removes them before Rewrite): the router is the edge and says who called.
func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	rq := requestOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = rq.route.Host // the balancer puts an instance here
	pr.Out.Host = pr.In.Host        // the instance sees the name it was called by
	pr.SetXForwarded()
	pr.Out.Header.Set("X-Request-Id", rq.id)
	pr.Out.Header.Set("X-Request-Start", "t="+strconv.FormatInt(rq.start.UnixMilli(), 10))
}

func modifyResponse(resp *http.Response) error {
	if resp.Header.Get("X-Request-Id") == "" {
		resp.Header.Set("X-Request-Id", requestOf(resp.Request.Context()).id)
	}
	return nil
}

// proxyError answers a request no instance answered: 504 when the instance was too slow,
// 502 otherwise. A client that went away gets nothing.
func (r *Router) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	rq := requestOf(req.Context())
	rq.err = err
	if req.Context().Err() != nil && !errors.Is(context.Cause(req.Context()), errRolling) {
		w.WriteHeader(499) // nginx's "client closed request", for the access log only
		return
	}
	r.stats.BadGateway.Add(1)
	if isTimeout(err) || errors.Is(err, errRolling) {
		errorPage(w, http.StatusGatewayTimeout, "Application too slow",
			fmt.Sprintf("Service %s of formation %s did not answer in time.", rq.route.Service, rq.route.Formation), rq.id)
		return
	}
	errorPage(w, http.StatusBadGateway, "Application error",
		fmt.Sprintf("Service %s of formation %s could not be reached or closed the connection.", rq.route.Service, rq.route.Formation), rq.id)
}

func errorPage(w http.ResponseWriter, status int, title, text, id string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Request-Id", id)
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<title>%d %s</title>\n<h1>%s</h1>\n<p>%s</p>\n<p><small>gilliam-sync router, request %s</small></p>\n",
		status, html.EscapeString(title), html.EscapeString(title), html.EscapeString(text), html.EscapeString(id))
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// errRolling is the cause of a request cancelled because its response stopped coming for
// longer than the rolling timeout.
var errRolling = errors.New("response stalled past the rolling timeout")

// balancer sends a request to the instances of its route in turn, starting at the route's
// round-robin cursor. It tries another instance when no connection was made: then not a
// byte of the request was written, and sending it again cannot run it twice. A request
// that was written goes to one more instance only when it is replayable (replayable: a
// bodiless GET, HEAD, OPTIONS or TRACE, or one carrying an Idempotency-Key) and its
// connection closed before a byte of the answer came, not by a timeout: an instance
// stopping with connections still in its accept queue hangs up on them, and nginx's
// proxy_next_upstream does the same for idempotent requests. Anything else (a POST whose
// connection was reset, a timeout, a second hang-up) goes back to the client as a 502 or
// 504.
type balancer struct {
	base    http.RoundTripper
	rolling time.Duration
	stats   *Stats
	// table is the router's table in use. When every instance of a route refused the
	// connection, the request waits up to refusedWait for a newer table that lists other
	// instances, and tries those: a router whose view of Consul lags past a drain (a
	// loaded machine) finds the instances that replaced the ones gone.
	table       func() *Table
	refusedWait time.Duration
}

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	rq := requestOf(req.Context())
	a := &attempt{req: req, rq: rq}
	if req.Body != nil && req.Body != http.NoBody {
		a.body = &trackedBody{rc: req.Body}
	}
	route := rq.route
	for {
		resp, err, again := b.tryRoute(a, route)
		if !again {
			return resp, err
		}
		if route = b.newerRoute(req.Context(), req.Host, route, a.tried); route == nil {
			return nil, err
		}
	}
}

// attempt is one request's way through the instances.
type attempt struct {
	req     *http.Request
	rq      *request
	body    *trackedBody
	replays int             // attempts sent again after the request was written
	tried   map[string]bool // instances that failed; made at the first failure (most requests have none)
}

// tryRoute sends the request to the route's instances not tried yet, from its cursor on.
// again says that every one refused the connection, so a newer route may be tried.
func (b *balancer) tryRoute(a *attempt, route *Route) (resp *http.Response, err error, again bool) {
	first := route.start()
	n := uint64(len(route.Backends))
	for i := range n {
		addr := route.Backends[(first+i)%n]
		if a.tried[addr] {
			continue
		}
		var connected, answered bool
		resp, err, connected, answered = b.send(a, addr)
		if err == nil {
			return resp, nil, false
		}
		if a.tried == nil {
			a.tried = map[string]bool{}
		}
		a.tried[addr] = true
		if a.req.Context().Err() != nil {
			return nil, err, false
		}
		if connected || (a.body != nil && a.body.started.Load()) {
			if a.replays > 0 || a.body != nil || !replayable(a.req) || answered || isTimeout(err) {
				return nil, err, false
			}
			a.replays++
		}
	}
	return nil, err, a.replays == 0
}

// send makes one attempt at addr; connected and answered say whether a connection was
// made and whether a byte of the answer came.
func (b *balancer) send(a *attempt, addr string) (resp *http.Response, err error, connected, answered bool) {
	var conn, first atomic.Bool
	ctx := httptrace.WithClientTrace(a.req.Context(), &httptrace.ClientTrace{
		GotConn:              func(httptrace.GotConnInfo) { conn.Store(true) },
		GotFirstResponseByte: func() { first.Store(true) },
	})
	ctx, cancel := context.WithCancelCause(ctx)
	out := a.req.WithContext(ctx) // a shallow copy: headers are shared, and not changed
	u := *a.req.URL
	u.Host = addr
	out.URL = &u
	if a.body != nil {
		out.Body = a.body
	}
	if a.rq.attempts > 0 {
		b.stats.Retries.Add(1)
	}
	a.rq.attempts++
	a.rq.backend = addr
	resp, err = b.base.RoundTrip(out)
	if err != nil {
		cancel(nil)
		return nil, err, conn.Load(), first.Load()
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		// A WebSocket: the connection lives on, without a rolling timeout.
		resp.Body = &upgradedBody{ReadWriteCloser: rwc, cancel: cancel}
		return resp, nil, true, true
	}
	resp.Body = newRollingBody(resp.Body, b.rolling, cancel)
	return resp, nil, true, true
}

// newerRoute waits up to refusedWait for the table to give the request's host a route other
// than old with an instance not tried yet; nil when none comes.
func (b *balancer) newerRoute(ctx context.Context, host string, old *Route, tried map[string]bool) *Route {
	deadline := time.Now().Add(b.refusedWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r := b.table().Lookup(host); r != nil && r != old {
			for _, addr := range r.Backends {
				if !tried[addr] {
					return r
				}
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil
}

// replayable is http.Transport's own rule for sending a request again on another
// connection: a method that is idempotent by RFC 9110 and safe to repeat, or an
// Idempotency-Key header.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// trackedBody is a request body that tells whether any of it was read, and that the
// transport cannot close: after a failed connection it is sent again whole. The server
// closes the real one when the handler returns.
type trackedBody struct {
	rc      io.ReadCloser
	started atomic.Bool
}

func (t *trackedBody) Read(p []byte) (int, error) {
	t.started.Store(true)
	return t.rc.Read(p)
}

func (t *trackedBody) Close() error { return nil }

// rollingBody cancels the request when no read of the response returns for the rolling
// timeout: a response may stream as long as it keeps moving.
type rollingBody struct {
	rc      io.ReadCloser
	timer   *time.Timer
	rolling time.Duration
	cancel  context.CancelCauseFunc
}

func newRollingBody(rc io.ReadCloser, rolling time.Duration, cancel context.CancelCauseFunc) *rollingBody {
	return &rollingBody{rc: rc, rolling: rolling, cancel: cancel,
		timer: time.AfterFunc(rolling, func() { cancel(errRolling) })}
}

func (b *rollingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.rolling)
	}
	return n, err
}

func (b *rollingBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// upgradedBody is the connection of a switched protocol; closing it ends the request.
type upgradedBody struct {
	io.ReadWriteCloser
	cancel context.CancelCauseFunc
}

func (b *upgradedBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.cancel(nil)
	return err
}

// logWriter records the status and size of an answer for the access log. Unwrap lets
// http.ResponseController (which ReverseProxy uses to flush and to hijack for WebSockets)
// reach the server's writer.
type logWriter struct {
	http.ResponseWriter
	status    int
	bytes     int64
	headersAt time.Time // when the status was written
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status, w.headersAt = code, time.Now()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status, w.headersAt = http.StatusOK, time.Now()
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (r *Router) accessLog(w *logWriter, req *http.Request, rq *request) {
	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("host", req.Host),
		slog.String("path", req.URL.Path),
		slog.Int("status", w.status),
		slog.Int64("bytes", w.bytes),
		slog.Float64("duration_ms", float64(time.Since(rq.start).Microseconds())/1000),
		slog.String("request_id", rq.id),
		slog.String("remote", req.RemoteAddr),
	}
	if rq.route != nil {
		attrs = append(attrs, slog.String("formation", rq.route.Formation), slog.String("service", rq.route.Service))
	}
	if rq.backend != "" {
		attrs = append(attrs, slog.String("instance", rq.backend), slog.Int("attempts", rq.attempts))
	}
	if rq.err != nil {
		attrs = append(attrs, slog.String("err", rq.err.Error()))
	}
	r.cfg.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// measure records a request answered: by the formation and service of its route ("" for
// a host name no formation has), its status class, and the time to its response's
// headers (or its end, for a request that never got any).
func (r *Router) measure(w *logWriter, rq *request) {
	var formation, service string
	if rq.route != nil {
		formation, service = rq.route.Formation, rq.route.Service
	}
	d := time.Since(rq.start)
	if !w.headersAt.IsZero() {
		d = w.headersAt.Sub(rq.start)
	}
	r.cfg.Metrics.RouterRequest(formation, service, w.status, d)
}
