package gitwatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// withIdle sets the idle timeout of connections dialled during the test. Not parallel:
// no other test's connection must be dialled with it.
func withIdle(t *testing.T, d time.Duration) {
	installTransport()
	old := idleTimeout.Swap(int64(d))
	t.Cleanup(func() { idleTimeout.Store(old) })
}

// A git server that accepts the connection and never answers costs a poll the idle
// timeout, not the poll's ten-minute bound, and the error names the server.
func TestSilentServerFailsAfterTheIdleTimeout(t *testing.T) {
	withIdle(t, 500*time.Millisecond)
	addr := serveEach(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }) // reads, never answers
	r, err := Open("http://"+addr+"/silent.git", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err = r.ListRefs(ctx)
	took := time.Since(start)
	var stalled *stalledServerError
	if err == nil || !errors.As(err, &stalled) || !strings.Contains(err.Error(), "sent nothing for 500ms") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("after %s: %v, want the server named as sending nothing for 500ms", took, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the idle timeout did not fire: the call ran to its context's end (%s)", took)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a timeout: it would not be retried as one", err)
	}
}

// A server that answers slowly but steadily is never cut short: a fetch that takes several
// idle timeouts in all, with bytes every so often, succeeds. (The idle timeout is seconds,
// not milliseconds: git-http-backend on a loaded machine once took 400 ms to start
// answering.)
func TestSlowSteadyFetchIsNotCutShort(t *testing.T) {
	const idle = 3 * time.Second
	withIdle(t, idle)
	srv := testenv.NewGitServer(t)
	repo := srv.NewRepo(t, "slow")
	blob := make([]byte, 3<<10)
	_, _ = rand.Read(blob)
	commit := repo.Commit(map[string]string{"data": hex.EncodeToString(blob)}, "big enough to trickle")
	proxy := trickle(t, strings.TrimPrefix(srv.URL, "http://"), 512, idle/4)

	r, err := Open("http://"+proxy+"/slow.git", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	refs, err := r.ListRefs(ctx)
	if err != nil || refs["refs/heads/main"] != commit {
		t.Fatalf("list refs through the slow server: %v %v", refs, err)
	}
	if err := r.Fetch(ctx, "refs/heads/main"); err != nil {
		t.Fatalf("fetch through the slow server after %s: %v", time.Since(start), err)
	}
	if took := time.Since(start); took < 2*idle {
		t.Fatalf("the transfer took %s: too quick to show that the idle timeout (%s) is not a total bound", took, idle)
	}
}

// serveEach listens on a free port and hands each connection to handle, closing it after;
// it stops with the test, once every handler has returned.
func serveEach(t *testing.T, handle func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); conns.Wait() })
	conns.Add(1)
	go func() {
		defer conns.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); defer c.Close(); handle(c) }()
		}
	}()
	return l.Addr().String()
}

// trickle proxies TCP to target, passing the server's bytes on in chunks of size with a
// pause after each.
func trickle(t *testing.T, target string, size int, pause time.Duration) string {
	return serveEach(t, func(c net.Conn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		requests := make(chan struct{})
		go func() { defer close(requests); _, _ = io.Copy(up, c); up.Close() }()
		defer func() { c.Close(); <-requests }()
		buf := make([]byte, size)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				time.Sleep(pause)
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}
