package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// IdleTimeout is how long a git server over HTTP(S) may send nothing, once connected, before
// the request fails: a server that accepts and then stalls costs a poll this long, not the
// poll's whole bound (pollTimeout). A large fetch that keeps sending is never cut short: the
// clock restarts with every byte either way.
const IdleTimeout = 2 * time.Minute

// idleTimeout is IdleTimeout, shorter in tests; a connection keeps the value it was
// dialled with.
var idleTimeout atomic.Int64

func init() { idleTimeout.Store(int64(IdleTimeout)) }

// dialTimeout bounds connecting to a git server (TCP, then TLS).
const dialTimeout = 30 * time.Second

var installOnce sync.Once

// installTransport makes go-git use an HTTP client with the timeouts above for http and
// https remotes. go-git keeps its transports per process (client.InstallProtocol), so
// every Repo of the process shares this one; the first Open installs it.
func installTransport() {
	installOnce.Do(func() {
		d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, addr: addr, idle: time.Duration(idleTimeout.Load())}, nil
		}
		t.TLSHandshakeTimeout = dialTimeout
		t.IdleConnTimeout = 90 * time.Second
		hc := githttp.NewClient(&http.Client{Transport: t})
		client.InstallProtocol("http", hc)
		client.InstallProtocol("https", hc)
	})
}

// idleConn fails a read when the connection has seen no traffic either way for its idle
// time: each write and each read pushes the read deadline on. (A write pushes it
// too, so that a connection reused from the pool, whose read began while it was idle, is
// given the whole time for its new request's answer.)
type idleConn struct {
	net.Conn
	addr string
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = &stalledServerError{addr: c.addr, idle: c.idle, err: err}
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}

// stalledServerError is a git server that sent nothing for the idle timeout. It is a
// timeout (net.Error), so it is retried like any other network failure.
type stalledServerError struct {
	addr string
	idle time.Duration
	err  error
}

func (e *stalledServerError) Error() string {
	return fmt.Sprintf("git server %s sent nothing for %s", e.addr, e.idle)
}
func (e *stalledServerError) Unwrap() error   { return e.err }
func (e *stalledServerError) Timeout() bool   { return true }
func (e *stalledServerError) Temporary() bool { return true }
