package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/docker/docker/client"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
)

var hostCmd = &command{
	name:    "host",
	usage:   "[--id ID] [--consul ADDR] [--advertise IP] [--labels k=v,...] [--cpu N] [--memory M] [--data DIR] [--registry-auth FILE] [--metrics ADDR] [--logs-listen ADDR --logs-token-file FILE]",
	summary: "run the host daemon: this machine's assigned instances in Docker, registered in Consul",
	run:     runHost,
}

// hostFlags are the host command's flags.
type hostFlags struct {
	id, advertise, cpu, memory, data, registryAuth, meshListen   string
	labels                                                       labelsFlag
	ttl, deregisterAfter, stopTimeout, drainDelay, grace, resync time.Duration
	imageGCGrace, unhealthyAfter                                 time.Duration
	pidsLimit                                                    int64
	metrics                                                      *string
	logs                                                         logsServeFlags
	store                                                        storeFunc
	logger                                                       func() (*slog.Logger, error)
}

func defineHostFlags(fs *flag.FlagSet, stderr io.Writer) *hostFlags {
	f := &hostFlags{labels: labelsFlag{}}
	hostname, _ := os.Hostname()
	fs.StringVar(&f.id, "id", hostname, "this host's id, in Consul and in container labels")
	fs.StringVar(&f.advertise, "advertise", "", "IP address instances are published and registered on (default: the address of the interface of the default route, else 127.0.0.1)")
	fs.StringVar(&f.meshListen, "mesh-listen", "", "address other hosts reach this host's instances through, over mutual TLS with Consul Connect certificates (docs/networking.md) (default: the advertise address, the port it had last time, else any free one)")
	fs.Var(f.labels, "labels", "host labels for placement constraints, key=value,...")
	fs.StringVar(&f.cpu, "cpu", "", "CPU this host offers to instances: cores (4, 1.5) or millicores (1500m) (default: every core)")
	fs.StringVar(&f.memory, "memory", "", "memory this host offers to instances: 8Gi, 512Mi, 2G or bytes (default: all of it)")
	fs.StringVar(&f.data, "data", defaultHostData(), "data directory: the host key (host.key), the last assignment and its releases, for a restart without Consul")
	fs.DurationVar(&f.ttl, "ttl", 5*time.Second, "TTL of the host's liveness check in Consul: a host silent this long is failing, and dead (its instances move) after the sync daemon's dead-after")
	fs.DurationVar(&f.deregisterAfter, "deregister-after", time.Minute, "a host or instance critical for this long leaves Consul's catalog")
	fs.DurationVar(&f.stopTimeout, "stop-timeout", 10*time.Second, "time an instance has between SIGTERM and SIGKILL")
	fs.DurationVar(&f.drainDelay, "drain-delay", time.Second, "time a running instance keeps running after it left the catalog, before its SIGTERM (0: none)")
	fs.DurationVar(&f.grace, "orphan-grace", time.Minute, "how long a labelled container no assignment names is left before it is removed")
	fs.DurationVar(&f.resync, "resync", 5*time.Second, "how often containers and registrations are checked without any event")
	fs.StringVar(&f.registryAuth, "registry-auth", "", "registry credentials to pull with: a Docker config.json (its \"auths\"), such as the pull credential gilliam-sync up writes")
	fs.Int64Var(&f.pidsLimit, "pids-limit", hostd.DefaultPidsLimit, "the most processes one instance's container may have")
	fs.DurationVar(&f.imageGCGrace, "image-gc-grace", hostd.DefaultImageGCGrace, "an image this host pulled is removed once no assignment has named it for this long (and no container uses it)")
	fs.DurationVar(&f.unhealthyAfter, "unhealthy-after", hostd.DefaultUnhealthyAfter, "an instance whose check stays critical this long after its check grace is restarted")
	f.metrics = metricsFlag(fs)
	f.logs = addLogsServeFlags(fs, "this host's instance logs")
	f.store = consulFlags(fs)
	f.logger = logFlags(fs, stderr)
	return f
}

// parse parses args into the daemon's configuration; when the command must stop there
// (-h, a flag refused), ok is false and code is its exit code.
func (f *hostFlags) parse(fs *flag.FlagSet, args []string, stderr io.Writer) (cfg hostd.Config, code int, ok bool) {
	if positional, err := parseArgs(fs, args); err != nil {
		return cfg, flagExit(err), false
	} else if len(positional) > 0 {
		fmt.Fprintf(stderr, "gilliam-sync host: unexpected arguments %q\n", positional)
		return cfg, 2, false
	}
	cfg, err := f.config()
	if err == nil {
		cfg.Logger, err = f.logger()
	}
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host:", err)
		return cfg, 2, false
	}
	return cfg, 0, true
}

func runHost(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	f := defineHostFlags(fs, stderr)
	cfg, code, ok := f.parse(fs, args, stderr)
	if !ok {
		return code
	}
	cfg.Metrics = metrics.New("host")
	store, err := f.store(cfg.Metrics)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host:", err)
		return 1
	}
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host: docker client:", err)
		return 1
	}
	defer docker.Close()
	logs, err := f.logs.open(cfg.Advertise)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host:", err)
		return 2
	}
	if logs != nil {
		cfg.LogsURL = logs.url
	}
	d, err := hostd.New(cfg, store, docker)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host:", err)
		return 1
	}
	if _, err := serveMetrics(ctx, *f.metrics, cfg.Metrics, cfg.Logger); err != nil {
		fmt.Fprintln(stderr, "gilliam-sync host:", err)
		return 2
	}
	if logs != nil {
		logs.serve(ctx, d.LogsHandler(logs.token), cfg.Logger)
	}
	if err := d.Run(ctx); err != nil {
		cfg.Logger.Error("host daemon stopped", "err", err)
		return 1
	}
	return 0
}

// config turns the flags into the daemon's configuration, with the machine's defaults.
func (f *hostFlags) config() (hostd.Config, error) {
	if f.id == "" {
		return hostd.Config{}, fmt.Errorf("--id is required (the hostname is unknown)")
	}
	cfg := hostd.Config{
		ID: f.id, Advertise: f.advertise, Labels: f.labels, Capacity: hostd.MachineCapacity(), DataDir: f.data,
		HostTTL: f.ttl, DeregisterAfter: f.deregisterAfter, StopTimeout: f.stopTimeout, DrainDelay: drainOrNone(f.drainDelay), OrphanGrace: f.grace, Resync: f.resync,
		PidsLimit: f.pidsLimit, ImageGCGrace: f.imageGCGrace, UnhealthyAfter: f.unhealthyAfter,
		MeshListen: f.meshListen,
	}
	if f.pidsLimit <= 0 {
		return hostd.Config{}, fmt.Errorf("--pids-limit %d: want a positive number", f.pidsLimit)
	}
	if f.registryAuth != "" {
		auth, err := hostd.LoadRegistryAuth(f.registryAuth)
		if err != nil {
			return hostd.Config{}, fmt.Errorf("--registry-auth: %w", err)
		}
		cfg.RegistryAuth = auth
	}
	if cfg.Advertise == "" {
		cfg.Advertise = defaultAdvertise()
	} else if net.ParseIP(cfg.Advertise) == nil {
		return hostd.Config{}, fmt.Errorf("--advertise %q: want an IP address", cfg.Advertise)
	}
	if f.cpu != "" {
		milli, err := parseHostCPU(f.cpu)
		if err != nil {
			return hostd.Config{}, fmt.Errorf("--cpu %q: %w", f.cpu, err)
		}
		cfg.Capacity.CPU = milli
	}
	if f.memory != "" {
		bytes, err := parseHostMemory(f.memory)
		if err != nil {
			return hostd.Config{}, fmt.Errorf("--memory %q: %w", f.memory, err)
		}
		cfg.Capacity.Memory = bytes
	}
	return cfg, nil
}

// defaultAdvertise is the address this machine reaches others from: the source address of
// its default route (dialing UDP sends no packet), else 127.0.0.1.
func defaultAdvertise() string {
	c, err := net.Dial("udp", "192.0.2.1:9") // TEST-NET-1: routed like any outside address
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
		return a.IP.String()
	}
	return "127.0.0.1"
}

// defaultHostData is /var/lib/gilliam-sync/host for root, else under the user's state dir.
func defaultHostData() string {
	if os.Geteuid() == 0 {
		return "/var/lib/gilliam-sync/host"
	}
	if dir := os.Getenv("XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "gilliam-sync", "host")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".gilliam/host"
	}
	return filepath.Join(home, ".local", "state", "gilliam-sync", "host")
}

var (
	hostCPURE    = regexp.MustCompile(`^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$`)
	hostMemoryRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$`)
	memoryUnits  = map[string]int64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
)

// parseHostCPU reads cores (4, 1.5) or millicores (1500m), as gilliam.yml writes CPU.
func parseHostCPU(s string) (int64, error) {
	if !hostCPURE.MatchString(s) || strings.Trim(s, "0.m") == "" {
		return 0, fmt.Errorf("want cores such as 4 or 1.5, or millicores such as 1500m")
	}
	if digits, ok := strings.CutSuffix(s, "m"); ok {
		r, _ := new(big.Int).SetString(digits, 10)
		return r.Int64(), nil
	}
	r, _ := new(big.Rat).SetString(s)
	return new(big.Rat).Mul(r, big.NewRat(1000, 1)).Num().Int64(), nil
}

// parseHostMemory reads a size as gilliam.yml writes one: 8Gi, 512Mi, 2G or bytes.
func parseHostMemory(s string) (int64, error) {
	if !hostMemoryRE.MatchString(s) {
		return 0, fmt.Errorf("want a size such as 8Gi, 512Mi, 2G, or bytes")
	}
	num := strings.TrimRight(s, "KMGTi")
	r, _ := new(big.Rat).SetString(num)
	r.Mul(r, new(big.Rat).SetInt64(memoryUnits[s[len(num):]]))
	if !r.IsInt() || !r.Num().IsInt64() || r.Sign() == 0 {
		return 0, fmt.Errorf("want a whole, positive number of bytes")
	}
	return r.Num().Int64(), nil
}

// drainOrNone maps the flag's 0 (none) to the config's negative (none; 0 is the default).
func drainOrNone(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
