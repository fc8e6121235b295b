package router

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A watch whose blocking query stops answering (fabio #481: routes stale for hours) is
// found stale after its wait plus the stale margin, counted, logged and restarted; the
// routes it had are kept meanwhile, and once Consul answers again the table catches up.
func TestStaleWatchRestarted(t *testing.T) {
	c := testenv.NewConsul(t)
	p := newFreezer(t, c.Addr)
	conf := api.DefaultConfig()
	conf.Address = p.addr
	client, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, client, func(cfg *Config) {
		cfg.WatchWait = time.Second
		cfg.StaleAfter = 500 * time.Millisecond
	})
	one := newBackend(t, "one", nil)
	one.register(t, c.Client, "stale", "web", regOpts{ttl: true})
	e.waitBackends("stale.localhost", 1)

	p.freeze()
	two := newBackend(t, "two", nil)
	two.register(t, c.Client, "stale", "web", regOpts{ttl: true})
	testenv.Eventually(t, 10*time.Second, "a stale watch counted", func() bool {
		return e.router.Stats().StaleRestarts.Load() > 0
	})
	if code, body := e.get("stale.localhost", "/"); code != 200 || body != "one\n" {
		t.Errorf("while Consul does not answer, the routes it gave: %d %q", code, body)
	}
	p.thaw()
	e.waitBackends("stale.localhost", 2)
}

// freezer is a TCP proxy to Consul that can stop passing bytes, both ways, on every
// connection, without closing any: what a hung agent or a black-holed network looks like.
type freezer struct {
	addr  string
	gate  sync.RWMutex
	mu    sync.Mutex
	conns []net.Conn
}

func newFreezer(t *testing.T, upstream string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: l.Addr().String()}
	go func() {
		for {
			down, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, down, up)
			f.mu.Unlock()
			go f.pipe(up, down)
			go f.pipe(down, up)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.gate.RLock()
			_, werr := dst.Write(buf[:n])
			f.gate.RUnlock()
			if werr != nil {
				break
			}
		}
		if err != nil {
			break // io.EOF or a closed connection: close both sides
		}
	}
	dst.Close()
	src.Close()
}

func (f *freezer) freeze() { f.gate.Lock() }
func (f *freezer) thaw()   { f.gate.Unlock() }
