package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	stdsync "sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/logstream"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

var upCmd = &command{
	name:    "up",
	usage:   "--repo URL|PATH [flags]",
	summary: "run everything on this machine: the sync daemon, a host daemon and an embedded registry",
	run:     runUp,
}

func runUp(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	repo := addRepoFlags(fs, 5*time.Second)
	data := fs.String("data", ".gilliam", "data directory: repository caches, registry, host state")
	builder := fs.String("builder", build.DefaultBuilder, "buildpack builder image")
	reg := fs.String("registry", "", "publish to this registry (host:port) instead of the embedded one")
	regListen := fs.String("registry-listen", "127.0.0.1:5000", "address of the embedded registry")
	hostname, _ := os.Hostname()
	hostID := fs.String("host-id", hostname, "this host's id")
	advertise := fs.String("advertise", "127.0.0.1", "IP address instances are published and registered on")
	labels := labelsFlag{}
	fs.Var(labels, "labels", "host labels, key=value,...")
	routerF := addRouterFlags(fs, "router-", "127.0.0.1:8080")
	metricsAddr := metricsFlag(fs)
	logsListen := fs.String("logs-listen", "127.0.0.1:0", "address serving instance and build logs to `gilliam-sync logs` (its token is DATA/logs-token); empty: none")
	store := consulFlags(fs)
	logger := logFlags(fs, stderr)
	if positional, err := parseArgs(fs, args); err != nil {
		return flagExit(err)
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync up: unexpected arguments %q\n", positional)
		return 2
	}
	if *repo.url == "" {
		fmt.Fprintln(stderr, "gilliam-sync up: --repo is required")
		fs.Usage()
		return 2
	}
	log, err := logger()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync up:", err)
		return 2
	}
	if err := up(ctx, upConfig{
		repo: repo.config(), data: *data, builder: *builder, registry: *reg,
		registryListen: *regListen, hostID: *hostID, advertise: *advertise, labels: labels,
		router: routerF, metrics: *metricsAddr, logsListen: *logsListen,
	}, store, log); err != nil {
		log.Error("gilliam-sync up stopped", "err", err)
		return 1
	}
	return 0
}

type upConfig struct {
	repo                                    gitwatch.RepoConfig
	data, builder, registry, registryListen string
	hostID, advertise                       string
	labels                                  map[string]string
	// router: the router's flags; its --router-listen empty runs no router.
	router routerFlags
	// metrics is the address of /metrics (empty: none); logsListen of the logs endpoint.
	metrics, logsListen string
}

func up(ctx context.Context, c upConfig, newStore storeFunc, log *slog.Logger) error {
	data, err := filepath.Abs(c.data)
	if err != nil {
		return err
	}
	m := metrics.New("up")
	store, err := newStore(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := serveMetrics(ctx, c.metrics, m, log); err != nil {
		return err
	}
	var logs *logsServer
	if c.logsListen != "" {
		token, err := logstream.LoadOrCreateToken(filepath.Join(data, "logs-token"))
		if err != nil {
			return err
		}
		if logs, err = listenLogs(c.logsListen, "", c.advertise, token); err != nil {
			return err
		}
	}
	var wg stdsync.WaitGroup
	errc := make(chan error, 4)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}

	var pullAuth map[string]hostd.RegistryCredential
	var keychain authn.Keychain
	if c.registry == "" {
		// Two credentials, made at the first start and kept 0600 in the data dir: the
		// builder pushes with one, the host pulls with the other, anyone else gets 401.
		creds, err := registry.LoadOrCreateCredentials(filepath.Join(data, "registry-credentials.json"))
		if err != nil {
			return err
		}
		r, err := registry.New(filepath.Join(data, "registry"), log.With("component", "registry"), creds)
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", c.registryListen)
		if err != nil {
			return fmt.Errorf("embedded registry: %w", err)
		}
		c.registry = l.Addr().String()
		if ap, err := netip.ParseAddrPort(c.registry); err != nil || !ap.Addr().IsLoopback() {
			log.Warn("the embedded registry listens beyond loopback: it speaks plain HTTP, so its credentials cross the network in clear", "address", c.registry)
		}
		// For the tools that read a Docker config (DOCKER_CONFIG=<dir> gilliam-sync gc,
		// docker pull, gilliam-sync host --registry-auth on another machine).
		for kind, cred := range map[string]registry.Credential{"push": creds.Push, "pull": creds.Pull} {
			if err := registry.WriteDockerConfig(filepath.Join(data, "registry-auth", kind, "config.json"), c.registry, cred); err != nil {
				return err
			}
		}
		pullAuth = map[string]hostd.RegistryCredential{c.registry: {Username: creds.Pull.Username, Password: creds.Pull.Password}}
		keychain = registry.Keychain(c.registry, creds.Push)
		srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
		run("registry", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		log.Info("embedded registry serving", "address", c.registry, "dir", filepath.Join(data, "registry"))
	}

	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()
	hc := hostd.Config{
		ID: c.hostID, Advertise: c.advertise, Labels: c.labels, Capacity: hostd.MachineCapacity(),
		DataDir: filepath.Join(data, "host"), Logger: log.With("component", "hostd"), RegistryAuth: pullAuth, Metrics: m,
	}
	if logs != nil {
		hc.LogsURL = logs.url
	}
	host, err := hostd.New(hc, store, docker)
	if err != nil {
		return err
	}
	cfg := &daemonConfig{Registry: c.registry, Builder: c.builder, Data: filepath.Join(data, "sync"),
		Repos: []gitwatch.RepoConfig{c.repo}, keychain: keychain}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	run("hostd", host.Run)
	x := syncExtras{metrics: m}
	if logs != nil {
		// One listener for both: the host's instance logs and the builder's build logs.
		mux := http.NewServeMux()
		mux.Handle(logstream.Path, host.LogsHandler(logs.token))
		mux.Handle(logstream.BuildPath, buildLogsHandler(filepath.Join(cfg.Data, "build"), logs.token))
		logs.serve(ctx, mux, log)
		x.logsURL = logs.url
	}
	run("sync", func(ctx context.Context) error { return runSyncDaemon(ctx, cfg, store, log, x) })
	if *c.router.listen != "" {
		run("router", func(ctx context.Context) error {
			err := serveRouter(ctx, c.router, store, m, log, func(addr string) {
				_, port, _ := net.SplitHostPort(addr)
				log.Info("router: every formation at http://<formation>."+*c.router.domain+":"+port+"/", "example", "http://hello."+*c.router.domain+":"+port+"/")
			})
			if errors.Is(err, errRouterListen) {
				// Another up (or anything) has the port: the rest runs without a router.
				log.Error("router not started; --router-listen picks another address", "err", err)
				return nil
			}
			return err
		})
	}
	log.Info("gilliam-sync up", "repo", gitwatch.Sanitize(c.repo.URL), "ref", c.repo.Branches[0], "host", c.hostID, "registry", c.registry, "data", data)
	<-ctx.Done()
	wg.Wait()
	close(errc)
	return <-errc
}
