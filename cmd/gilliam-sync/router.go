package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

var routerCmd = &command{
	name:    "router",
	usage:   "[flags]",
	summary: "serve every formation and preview at <service>.<formation>.<domain>, routed from Consul health",
	run:     runRouter,
}

// routerFlags are the router's flags: `router` takes them all, `up` the ones that matter
// on one machine, under a router- prefix.
type routerFlags struct {
	listen, httpsListen, tlsDir, metricsListen, metrics, domain *string
	redirectHTTPS, accessLog                                    *bool
	firstByte, rolling, dial, watchWait, staleAfter             *time.Duration
}

func addRouterFlags(fs *flag.FlagSet, prefix, listen string) routerFlags {
	f := routerFlags{
		listen:    fs.String(prefix+"listen", listen, "address the router serves HTTP on"+map[bool]string{true: "; empty: no router", false: ""}[prefix != ""]),
		domain:    fs.String(prefix+"domain", router.DefaultDomain, "domain formations are named under: <service>.<formation>.DOMAIN"),
		accessLog: fs.Bool(prefix+"access-log", true, "log one line per request (in --log-format)"),
	}
	if prefix != "" {
		f.httpsListen, f.tlsDir, f.metricsListen, f.metrics = new(string), new(string), new(string), new(string)
		f.redirectHTTPS = new(bool)
		for _, d := range []**time.Duration{&f.firstByte, &f.rolling, &f.dial, &f.watchWait, &f.staleAfter} {
			*d = new(time.Duration)
		}
		return f
	}
	f.httpsListen = fs.String("https-listen", "", "address the router serves HTTPS on (needs --tls-dir); empty: none")
	f.tlsDir = fs.String("tls-dir", "", "folder of NAME.crt and NAME.key pairs (PEM), served by SNI from the names in each certificate")
	f.redirectHTTPS = fs.Bool("redirect-https", false, "answer plain HTTP with a redirect to HTTPS (ACME HTTP-01 challenges excepted)")
	f.metrics = metricsFlag(fs)
	f.metricsListen = fs.String("metrics-listen", "", "the former name of --metrics")
	f.firstByte = fs.Duration("first-byte-timeout", router.DefaultFirstByteTimeout, "how long an instance has to send its response headers")
	f.rolling = fs.Duration("rolling-timeout", router.DefaultRollingTimeout, "how long a response may stop moving before it is cut")
	f.dial = fs.Duration("dial-timeout", router.DefaultDialTimeout, "how long a connection to an instance may take before another is tried")
	f.watchWait = fs.Duration("watch-wait", router.DefaultWatchWait, "wait of each Consul blocking query")
	f.staleAfter = fs.Duration("stale-after", router.DefaultStaleAfter, "a blocking query not answered this long past its wait is stale: restarted, counted, logged")
	return f
}

func runRouter(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	flags := addRouterFlags(fs, "", ":8080")
	newStore := consulFlags(fs)
	logger := logFlags(fs, stderr)
	if positional, err := parseArgs(fs, args); err != nil {
		return flagExit(err)
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync router: unexpected arguments %q\n", positional)
		return 2
	}
	log, err := logger()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync router:", err)
		return 2
	}
	m := metrics.New("router")
	store, err := newStore(m)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync router:", err)
		return 1
	}
	if err := serveRouter(ctx, flags, store, m, log, nil); err != nil {
		log.Error("gilliam-sync router stopped", "err", err)
		return 1
	}
	return 0
}

// errRouterListen marks a listener the router could not open.
var errRouterListen = errors.New("cannot listen")

// serveRouter runs a router until ctx ends: its Consul watches and its listeners. listening,
// when set, gets the HTTP address once it is bound.
func serveRouter(ctx context.Context, f routerFlags, store *state.Store, m *metrics.Metrics, log *slog.Logger, listening func(addr string)) error {
	cfg := router.Config{
		Metrics: m,
		Consul:  store.Client(), Prefix: store.Prefix(), Domain: *f.domain,
		FirstByteTimeout: *f.firstByte, RollingTimeout: *f.rolling, DialTimeout: *f.dial,
		WatchWait: *f.watchWait, StaleAfter: *f.staleAfter,
		Logger: log.With("component", "router"),
	}
	if *f.accessLog {
		cfg.AccessLog = log.With("component", "router-access")
	}
	r, err := router.New(cfg)
	if err != nil {
		return err
	}
	var certs *router.Certificates
	if *f.httpsListen != "" {
		if *f.tlsDir == "" {
			return errors.New("router: --https-listen needs --tls-dir")
		}
		if certs, err = router.LoadCertificates(*f.tlsDir); err != nil {
			return fmt.Errorf("router: %w", err)
		}
	} else if *f.redirectHTTPS {
		return errors.New("router: --redirect-https needs --https-listen")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg stdsync.WaitGroup
	errc := make(chan error, 4)
	serve := func(name, addr string, h http.Handler, tlsConf *tls.Config) (net.Addr, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("router %s: %w: %w", name, errRouterListen, err)
		}
		srv := &http.Server{Handler: h, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-ctx.Done()
			// Let requests in flight finish (the instance's own draining bounds them).
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
		}()
		go func() {
			defer wg.Done()
			var err error
			if tlsConf != nil {
				err = srv.ServeTLS(l, "", "")
			} else {
				err = srv.Serve(l)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("router %s: %w", name, err)
				cancel()
			}
		}()
		return l.Addr(), nil
	}
	var h http.Handler = r
	if *f.redirectHTTPS {
		_, port, _ := net.SplitHostPort(*f.httpsListen)
		h = router.RedirectHTTPS(port, r)
	}
	addr, err := serve("http", *f.listen, h, nil)
	if err != nil {
		return err
	}
	log.Info("router serving", "http", addr.String(), "domain", r.Domain())
	advertise := func(scheme string, a net.Addr) {
		port := a.(*net.TCPAddr).Port
		hostname, _ := os.Hostname()
		id := fmt.Sprintf("%s-%s-%s-%d", router.ConsulService, hostname, scheme, port)
		deregister, err := router.Register(store.Client(), id, a.String(), router.Listener{Scheme: scheme, Domain: r.Domain(), Port: port})
		if err != nil {
			log.Warn("router not registered in consul: gilliam-sync status will not show its URLs", "err", err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ctx.Done()
			if err := deregister(); err != nil {
				log.Warn("router deregistration", "id", id, "err", err)
			}
		}()
	}
	if !*f.redirectHTTPS {
		advertise("http", addr)
	}
	if certs != nil {
		a, err := serve("https", *f.httpsListen, r, certs.TLSConfig())
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		log.Info("router serving", "https", a.String())
		advertise("https", a)
	}
	if *f.metrics == "" {
		*f.metrics = *f.metricsListen
	}
	if *f.metrics != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		a, err := serve("metrics", *f.metrics, mux, nil)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		log.Info("router metrics", "address", a.String())
	}
	if listening != nil {
		listening(addr.String())
	}
	err = r.Run(ctx)
	cancel()
	wg.Wait()
	close(errc)
	if e := <-errc; e != nil {
		return e
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
