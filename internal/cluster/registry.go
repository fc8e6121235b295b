package cluster

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is a real OCI registry (go-containerregistry's, in memory) on the gateway
// address, the one address every host reaches; each host's engine is started with
// --insecure-registry for it. Stop and Start take it away and bring it back on the same
// address with the same content.
type Registry struct {
	// Addr is ip:port, the registry part of image references.
	Addr string

	handler http.Handler
	mu      sync.Mutex
	server  *http.Server
	done    chan struct{}
}

func newRegistry(ip string) (*Registry, error) {
	r := &Registry{handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.Addr = l.Addr().String()
	r.serve(l)
	return r, nil
}

func (r *Registry) serve(l net.Listener) {
	r.server = &http.Server{Handler: r.handler, ReadHeaderTimeout: 10 * time.Second}
	r.done = make(chan struct{})
	go func(s *http.Server, done chan struct{}) {
		defer close(done)
		if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("cluster: registry: %v", err)
		}
	}(r.server, r.done)
}

// Stop closes the listener and every open connection; pulls and pushes fail until Start.
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.server == nil {
		return
	}
	r.server.Close()
	<-r.done
	r.server = nil
}

// Start serves again on the same address, with everything pushed before Stop.
func (r *Registry) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.server != nil {
		return nil
	}
	var l net.Listener
	var err error
	for range 50 { // the port can take a moment to be free again
		if l, err = net.Listen("tcp", r.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("registry up again on %s: %w", r.Addr, err)
	}
	r.serve(l)
	return nil
}
