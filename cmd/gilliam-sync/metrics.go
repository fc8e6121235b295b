package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
)

// metricsFlag adds --metrics, the address a daemon serves /metrics on.
func metricsFlag(fs *flag.FlagSet) *string {
	return fs.String("metrics", "", "address serving Prometheus metrics at /metrics (see docs/observability.md); empty: none")
}

// serveMetrics serves m at /metrics on addr until ctx ends, and returns the address bound;
// an empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, m *metrics.Metrics, log *slog.Logger) (net.Addr, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics serving", "address", "http://"+l.Addr().String()+"/metrics")
	return l.Addr(), nil
}
