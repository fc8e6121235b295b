package sync_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// consulCounter sits between a daemon and Consul and counts the reads that do not block
// (a GET without an index), the blocking ones and the writes.
type consulCounter struct {
	reads, blocking, writes atomic.Int64
	mu                      stdsync.Mutex
	paths                   map[string]int
}

func newConsulCounter(t *testing.T, addr string) (*consulCounter, string) {
	target, _ := url.Parse("http://" + addr)
	c := &consulCounter{paths: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet:
			c.writes.Add(1)
		case r.URL.Query().Get("index") != "":
			c.blocking.Add(1)
		default:
			c.reads.Add(1)
			c.mu.Lock()
			c.paths[r.URL.Path]++
			c.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return c, srv.Listener.Addr().String()
}

// An idle leader costs nearly nothing: with 20 formations settled it follows Consul with
// blocking queries and makes (almost) no other read.
func TestIdleLeaderReads(t *testing.T) {
	t.Parallel()
	consul := testenv.NewConsul(t)
	reg := testenv.NewRegistry(t)
	git := testenv.NewGitServer(t)
	counter, addr := newConsulCounter(t, consul.Addr)
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	store := state.NewStore(client, "")
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("idle-h%d", i)
		if err := consul.Client.Agent().ServiceRegister(state.HostRegistration(state.Host{ID: id, Address: "127.0.0.1",
			Capacity: state.Resources{CPU: 64000, Memory: 64 << 30}}, time.Hour, time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := consul.Client.Agent().PassTTL(state.HostCheckID(id), ""); err != nil {
			t.Fatal(err)
		}
		trustHost(t, state.NewStore(consul.Client, ""), id)
	}
	image := randomImage(t, reg)
	var repos []gitwatch.RepoConfig
	for i := 0; i < 20; i++ {
		repo := git.NewRepo(t, fmt.Sprintf("idle%02d", i))
		repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: idle%02d\nservices:\n  web:\n    image: %s\n    scale: 1\n    check: none\n", i, image)}, "init")
		repos = append(repos, gitwatch.RepoConfig{URL: repo.URL, PollInterval: time.Hour})
	}
	s, err := sync.New(sync.Config{Key: rootKey, Repos: repos, DataDir: t.TempDir(), LockTTL: 10 * time.Second, LockDelay: time.Millisecond}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	testenv.Eventually(t, 60*time.Second, "20 formations placed", func() bool {
		assigned, _, err := store.Assignments(context.Background())
		n := 0
		for _, a := range assigned {
			n += len(a.Instances)
		}
		return err == nil && n == 20
	})
	time.Sleep(2 * time.Second) // the last writes seen
	reads, blocking, writes := counter.reads.Load(), counter.blocking.Load(), counter.writes.Load()
	const window = 30 * time.Second
	time.Sleep(window)
	reads, blocking, writes = counter.reads.Load()-reads, counter.blocking.Load()-blocking, counter.writes.Load()-writes
	perMinute := float64(reads) * float64(time.Minute) / float64(window)
	counter.mu.Lock()
	paths := fmt.Sprint(counter.paths)
	counter.mu.Unlock()
	testenv.Report(t, "sync-idle-reads", fmt.Sprintf("Idle leader, 20 formations settled, over %s: %d non-blocking reads (%.1f a minute), %d blocking queries, %d writes (session renewals)",
		window, reads, perMinute, blocking, writes))
	if perMinute >= 10 {
		t.Errorf("an idle leader made %.1f non-blocking reads a minute (want fewer than 10); by path since start: %s", perMinute, paths)
	}
}
