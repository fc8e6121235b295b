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

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/logstream"
)

// logsServeFlags are a daemon's flags for serving logs (a host's instance logs, a sync
// daemon's build logs) to `gilliam-sync logs`.
type logsServeFlags struct {
	listen, tokenFile, url *string
}

func addLogsServeFlags(fs *flag.FlagSet, what string) logsServeFlags {
	return logsServeFlags{
		listen:    fs.String("logs-listen", "", "address serving "+what+" to `gilliam-sync logs` (needs --logs-token-file); empty: none"),
		tokenFile: fs.String("logs-token-file", "", "file holding the token a logs request must carry (Authorization: Bearer); give the same file to `gilliam-sync logs --token-file`"),
		url:       fs.String("logs-url", "", "URL the logs are reached at, written in Consul for `gilliam-sync logs` (default http://ADVERTISE:PORT of --logs-listen)"),
	}
}

// logsServer is a bound logs listener: its URL for others, its token.
type logsServer struct {
	l     net.Listener
	url   string
	token string
}

// open binds the listener; advertise is the address others reach this machine at. It
// returns nil when --logs-listen is empty.
func (f logsServeFlags) open(advertise string) (*logsServer, error) {
	if *f.listen == "" {
		return nil, nil
	}
	if *f.tokenFile == "" {
		return nil, errors.New("--logs-listen needs --logs-token-file: logs are served to token holders only")
	}
	token, err := logstream.LoadToken(*f.tokenFile)
	if err != nil {
		return nil, err
	}
	return listenLogs(*f.listen, *f.url, advertise, token)
}

func listenLogs(listen, url, advertise, token string) (*logsServer, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("--logs-listen: %w", err)
	}
	if url == "" {
		host, port, _ := net.SplitHostPort(l.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = advertise
		}
		url = "http://" + net.JoinHostPort(host, port)
	}
	return &logsServer{l: l, url: url, token: token}, nil
}

// serve serves h (which checks the token itself) until ctx ends.
func (s *logsServer) serve(ctx context.Context, h http.Handler, log *slog.Logger) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(s.l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("logs server stopped", "err", err)
		}
	}()
	log.Info("logs serving", "url", s.url)
}

// buildLogsHandler serves the build logs of a build data directory at
// logstream.BuildPath (formation, service, follow), behind token: what `gilliam-sync logs
// build` reads from a machine other than the builder.
func buildLogsHandler(dataDir, token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+logstream.BuildPath, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		formation, service := q.Get("formation"), q.Get("service")
		if !logstream.ValidName(formation) || !logstream.ValidName(service) {
			http.Error(w, "formation and service are required: lowercase letters, digits and dashes", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		err := build.WriteLogs(r.Context(), dataDir, formation, service, flushWriter{w}, q.Get("follow") == "true")
		if errors.Is(err, build.ErrNoLogs) {
			http.Error(w, err.Error(), http.StatusNotFound)
		}
	})
	return logstream.Protect(token, mux)
}

// flushWriter flushes after every write, so a followed log arrives as it is written.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
