package gitwatch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/netutil"
)

// ServerConfig is how the webhook receiver listens (`webhooks:` in gilliam-sync.yml). The
// port faces the forges, so it faces the internet: every resource a client can hold is
// bounded. Zero values take the defaults below; Validate fills them in.
type ServerConfig struct {
	// Listen is the address, host:port; empty: no receiver.
	Listen string `yaml:"listen"`
	// TLSCertFile and TLSKeyFile (PEM) serve HTTPS; both or neither. The files are read
	// again when they change, so a renewed certificate needs no restart.
	TLSCertFile string `yaml:"tls_cert_file,omitempty"`
	TLSKeyFile  string `yaml:"tls_key_file,omitempty"`
	// MaxConnections caps the open connections; one more waits (in the kernel's backlog)
	// until one closes. Default 64.
	MaxConnections int `yaml:"max_connections,omitempty"`
	// MaxRequests caps the requests handled at once; one more waits up to QueueTimeout
	// for a slot, then gets 503. Default 16.
	MaxRequests int `yaml:"max_requests,omitempty"`
	// QueueTimeout is how long a request waits for a slot. Default 5s.
	QueueTimeout time.Duration `yaml:"queue_timeout,omitempty"`
	// ReadHeaderTimeout bounds reading a request's headers, ReadTimeout the whole request
	// (body included), WriteTimeout the answer, IdleTimeout a kept-alive connection with
	// no request. Defaults 5s, 10s, 10s, 60s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout,omitempty"`
	ReadTimeout       time.Duration `yaml:"read_timeout,omitempty"`
	WriteTimeout      time.Duration `yaml:"write_timeout,omitempty"`
	IdleTimeout       time.Duration `yaml:"idle_timeout,omitempty"`
	// MaxBodyBytes is the largest hook body accepted. Default DefaultWebhookLimit (1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes,omitempty"`
}

// Defaults of ServerConfig.
const (
	DefaultMaxConnections    = 64
	DefaultMaxRequests       = 16
	DefaultQueueTimeout      = 5 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
)

// Validate fills in the defaults and checks the configuration; the TLS files are loaded
// once, so that a wrong path or a key that does not match fails at start.
func (c *ServerConfig) Validate() error {
	var errs []error
	setDefault := func(field string, v *time.Duration, def time.Duration) {
		switch {
		case *v < 0:
			errs = append(errs, fmt.Errorf("webhooks.%s: %s is negative", field, *v))
		case *v == 0:
			*v = def
		}
	}
	setDefault("queue_timeout", &c.QueueTimeout, DefaultQueueTimeout)
	setDefault("read_header_timeout", &c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault("read_timeout", &c.ReadTimeout, DefaultReadTimeout)
	setDefault("write_timeout", &c.WriteTimeout, DefaultWriteTimeout)
	setDefault("idle_timeout", &c.IdleTimeout, DefaultIdleTimeout)
	if c.MaxConnections < 0 || c.MaxRequests < 0 || c.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("webhooks: max_connections, max_requests and max_body_bytes cannot be negative"))
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxRequests == 0 {
		c.MaxRequests = DefaultMaxRequests
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultWebhookLimit
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		errs = append(errs, errors.New("webhooks: set both tls_cert_file and tls_key_file, or neither"))
	case c.TLSCertFile != "":
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("webhooks: tls_cert_file, tls_key_file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server is the webhook receiver's listener and HTTP server, with its bounds applied.
type Server struct {
	cfg ServerConfig
	l   net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen validates cfg and listens on cfg.Listen for hooks (POST /hooks/<forge>) handled
// by h (a *Webhooks: its Limit is set from cfg.MaxBodyBytes). Serve serves them.
func Listen(cfg ServerConfig, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if wh, ok := h.(*Webhooks); ok {
		wh.Limit = cfg.MaxBodyBytes
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/hooks/", h)
	s := &Server{cfg: cfg, l: netutil.LimitListener(l, cfg.MaxConnections), log: log}
	s.srv = &http.Server{
		Handler:           limitRequests(mux, cfg.MaxRequests, cfg.QueueTimeout),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// HTTP/1.1 only: forges send hooks one per connection or kept alive, and HTTP/2
		// would multiplex many requests over one capped connection.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	if cfg.TLSCertFile != "" {
		certs := &certFiles{cert: cfg.TLSCertFile, key: cfg.TLSKeyFile}
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	}
	return s, nil
}

// Addr is the address listened on (useful with port 0).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// TLS reports whether the server serves HTTPS.
func (s *Server) TLS() bool { return s.srv.TLSConfig != nil }

// Serve serves until ctx ends, then closes the listener and every connection (requests in
// flight get a second to finish: a hook's work is only to ask for a poll).
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if s.srv.Shutdown(shut) != nil {
				s.srv.Close()
			}
		case <-done:
		}
	}()
	defer close(done)
	var err error
	if s.TLS() {
		err = s.srv.ServeTLS(s.l, "", "")
	} else {
		err = s.srv.Serve(s.l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("webhook receiver: %w", err)
}

// limitRequests lets at most n requests into h at once; one more waits up to wait for a
// slot, then gets 503 with Retry-After (a forge's redelivery, or the next poll, brings
// what it was about).
func limitRequests(h http.Handler, n int, wait time.Duration) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
		default:
			t := time.NewTimer(wait)
			select {
			case slots <- struct{}{}:
				t.Stop()
			case <-t.C:
				rw.Header().Set("Retry-After", strconv.Itoa(max(1, int(wait/time.Second))))
				http.Error(rw, "busy", http.StatusServiceUnavailable)
				return
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		defer func() { <-slots }()
		h.ServeHTTP(rw, r)
	})
}

// certFiles loads a certificate and key, again whenever either file changes on disk.
type certFiles struct {
	cert, key string

	mu                sync.Mutex
	loaded            *tls.Certificate
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	ci, err := os.Stat(c.cert)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver certificate: %w", err)
	}
	ki, err := os.Stat(c.key)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver key: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded != nil && ci.ModTime().Equal(c.certMod) && ki.ModTime().Equal(c.keyMod) &&
		ci.Size() == c.certSize && ki.Size() == c.keySize {
		return c.loaded, nil
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		if c.loaded != nil {
			return c.loaded, nil // half-written renewal: keep serving the previous pair
		}
		return nil, fmt.Errorf("webhook receiver certificate: %w", err)
	}
	c.loaded, c.certMod, c.keyMod, c.certSize, c.keySize = &pair, ci.ModTime(), ki.ModTime(), ci.Size(), ki.Size()
	return c.loaded, nil
}
