package sync_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// gateway is a registry's address that can refuse: while down it accepts each connection
// and closes it at once, as a registry that is restarting does; while up it relays bytes.
type gateway struct {
	l    net.Listener
	to   string
	down atomic.Bool
}

func newGateway(t *testing.T, to string) *gateway {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{l: l, to: to}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if g.down.Load() {
				c.Close()
				continue
			}
			go relay(c, to)
		}
	}()
	return g
}

func relay(c net.Conn, to string) {
	defer c.Close()
	up, err := net.Dial("tcp", to)
	if err != nil {
		return
	}
	defer up.Close()
	go io.Copy(up, c)
	io.Copy(c, up)
}

// resolver resolves image services through the real registry client, counting attempts.
type resolver struct{ attempts atomic.Int64 }

func (r *resolver) Build(ctx context.Context, req build.Request) (build.Result, error) {
	r.attempts.Add(1)
	image, err := build.Resolve(ctx, req.Image)
	return build.Result{Image: image}, err
}

type logBuffer struct {
	mu  stdsync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// A registry refusing connections for 60 s gives a bounded number of attempts, with a
// capped backoff between them, one log line when failing starts and one when it ends; the
// commit deploys once the registry is back.
func TestRegistryDownIsRetriedWithBackoff(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	store := state.NewStore(consul.Client, "")
	testenv.PushRandomImage(t, reg.Addr, "test/random", "latest")
	gw := newGateway(t, reg.Addr)
	gw.down.Store(true)
	repo := git.NewRepo(t, "regdown")
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: regdown\nservices:\n  web:\n    image: %s/test/random:latest\n    scale: 0\n",
		gw.l.Addr())}, "init")

	logs := &logBuffer{}
	res := &resolver{}
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir(), LockTTL: 10 * time.Second,
		LockDelay: time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))}, store, res)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	const outage = 60 * time.Second
	time.Sleep(outage)
	during := res.attempts.Load()
	gw.down.Store(false)
	testenv.Eventually(t, 90*time.Second, "the commit deployed once the registry is back", func() bool {
		d, _, err := store.Desired(context.Background(), "regdown")
		return err == nil && d != nil && d.Services["web"].Latest != ""
	})
	// The recovery is logged just after the deploy's transaction, which the test may see
	// first.
	testenv.Eventually(t, 10*time.Second, "the recovery logged", func() bool { return logs.count("release recovered") > 0 })
	failing, recovered := logs.count("release failing"), logs.count("release recovered")
	testenv.Report(t, "sync-registry-down", fmt.Sprintf("Registry refusing connections for %s: %d attempts while down (backoff 2s doubling, cap 1m), %d 'failing' log line, %d 'recovered'",
		outage, during, failing, recovered))
	if during > 8 || during < 3 {
		t.Errorf("%d attempts in %s: want a handful, backing off", during, outage)
	}
	if failing != 1 || recovered != 1 {
		t.Errorf("log lines: %d failing, %d recovered; want one of each\n%s", failing, recovered, logs.String())
	}
	if st, _ := store.FormationStatus(context.Background(), "regdown"); st == nil || st.Error != "" {
		t.Errorf("status after recovery: %+v", st)
	}
}

// With a registry policy and no builder, an image on a loopback address is refused as
// stalled: the commit waits for a person, it is not retried.
func TestImagePolicyWithoutBuilder(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	repo := testenv.NewGitServer(t).NewRepo(t, "policy")
	store := state.NewStore(consul.Client, "")
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: policy\nservices:\n  web:\n    image: %s\n    scale: 0\n", randomImage(t, reg))}, "loopback image")
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir(), Registries: &build.Registries{}}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SyncOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, err := store.FormationStatus(context.Background(), "policy")
	if err != nil || st == nil || !strings.Contains(st.Error, "is not allowed") {
		t.Fatalf("status: %+v %v", st, err)
	}
	if d, _, _ := store.Desired(context.Background(), "policy"); d != nil {
		t.Fatal("deployed an image from a loopback registry")
	}
}
