package build

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/go-containerregistry/pkg/authn"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
)

// The kinds of service Build makes an image for: the values of `type` in gilliam.yml.
const (
	KindBuildpack  = "buildpack"  // built from source with Cloud Native Buildpacks
	KindDockerfile = "dockerfile" // built from the Dockerfile at the root of the source
	KindImage      = "image"      // not built: a reference resolved to a digest
)

// Labels gilliam-sync puts on what builds leave in the Docker engine (cache volumes, images
// of Dockerfile builds), so that garbage collection finds what is its own and nothing else.
const (
	LabelFormation = "io.gilliam.build.formation"
	LabelService   = "io.gilliam.build.service"
	// LabelRegistry, on cache volumes, is the registry the service's images go to: one
	// installation collects only its own volumes.
	LabelRegistry = "io.gilliam.build.registry"
)

// Config configures New.
type Config struct {
	// Registry is where images are published: host:port, optionally with a path prefix.
	Registry string
	// Builder is the buildpack builder image (DefaultBuilder if empty). It must be in the
	// Docker engine: builds never pull it.
	Builder string
	// DataDir holds pack's home (pack/), the build logs (logs/), the sources being built
	// (src/) and the images published lately (published/, which GC spares).
	DataDir string
	// Concurrency is how many builds run at once (default: half the cores, at least one):
	// a build keeps a core or two busy compiling.
	Concurrency int
	// Timeout ends a build that runs longer (default 15 minutes).
	Timeout time.Duration
	// LogsPerService is how many build logs are kept per service (default 20).
	LogsPerService int
	// Isolation is what build containers may reach and use: no network by default, memory,
	// CPU and pids caps (isolation.go).
	Isolation Isolation
	// Registries is where images named by repositories may come from (registries.go).
	// Registry, where builds publish, is always allowed and reached as it is configured.
	Registries Registries
	// Keychain gives the credentials to push to Registry and to read images with; nil
	// means the Docker keychain (DOCKER_CONFIG, docker login).
	Keychain authn.Keychain
	// CacheScope names whose build caches these are; empty: the registry (see CacheVolume).
	CacheScope string
	// Logger receives what happens, build output included, line by line; nil discards it.
	Logger *slog.Logger
}

// Builder turns a service at a commit into an image pinned by digest. There is one per
// daemon: it owns the build queue. The registry is its memory: an image built once for a
// source tree, builder and build env is found there by its tag and never built again, across
// restarts.
type Builder struct {
	cfg    Config
	docker *client.Client
	pack   *Buildpacks
	queue  *queue
	log    *slog.Logger
	stop   context.CancelFunc

	// cgroupOK says whether Dockerfile builds get a pids cap (pidsCgroups).
	cgroupOnce sync.Once
	cgroupOK   bool
}

// New returns a Builder. It needs the Docker engine (builds run in it; DOCKER_HOST is
// honoured) only when a build runs.
func New(cfg Config) (*Builder, error) {
	if cfg.Registry == "" {
		return nil, errors.New("build: no registry to publish to")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("build: no data directory")
	}
	cfg.Registry = strings.TrimSuffix(cfg.Registry, "/")
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	cfg.Registries.Keychain = cfg.Keychain
	if cfg.Builder == "" {
		cfg.Builder = DefaultBuilder
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = max(1, runtime.NumCPU()/2)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Minute
	}
	if cfg.LogsPerService <= 0 {
		cfg.LogsPerService = 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("build: data directory: %w", err)
	}
	cfg.DataDir = dir
	for _, d := range []string{"pack", "logs", "src", "published"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("build: %w", err)
		}
	}
	pack, err := NewBuildpacks(BuildpacksConfig{Builder: cfg.Builder, Registry: cfg.Registry,
		PackHome: filepath.Join(dir, "pack"), Isolation: cfg.Isolation, Keychain: cfg.Keychain, CacheScope: cfg.CacheScope, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	cfg.Isolation = pack.iso
	// The registry builds publish to is the operator's: images there may be named, and it
	// is reached as builds reach it (plain HTTP when it offers no TLS).
	cfg.Registries.Insecure = append(slices.Clone(cfg.Registries.Insecure), registryHost(cfg.Registry))
	base, stop := context.WithCancel(context.Background())
	return &Builder{cfg: cfg, docker: pack.docker, pack: pack, queue: newQueue(base, cfg.Concurrency),
		log: cfg.Logger, stop: stop}, nil
}

// Close cancels the builds running and waiting (their callers get an error) and returns
// once they have ended: their logs closed, pack's containers gone; or, when an engine hangs,
// after closeWait with an error. Build after Close returns an error.
func (b *Builder) Close() error {
	b.stop()
	waited := b.queue.wait(closeWait)
	return errors.Join(waited, b.pack.Close())
}

// closeWait bounds how long Close waits for cancelled builds to stop; pack removes a
// build's containers in seconds when the engine answers.
const closeWait = time.Minute

// Registry is where images are published.
func (b *Builder) Registry() string { return b.cfg.Registry }

// Request is one service to make an image for.
type Request struct {
	Formation, Service string
	// Kind is KindBuildpack (the default), KindDockerfile or KindImage.
	Kind string
	// Image is the reference an image service runs, resolved to a digest.
	Image string
	// Commit is the commit built, for the logs.
	Commit string
	// TreeHash identifies the service's source (the git tree of its path at the commit):
	// with the builder and Env, it names the image in the registry.
	TreeHash string
	// Env is the build-time environment: the buildpacks' (BuildEnv picks it from a
	// service's env), or a Dockerfile's build args.
	Env map[string]string
	// CacheFrom is a formation whose build caches of this service the first build of
	// Formation starts from, copied (a preview's base formation); empty: none.
	CacheFrom string
	// Source writes the service's files into dir. It is called only when a build really
	// runs, not when the image is found built already.
	Source func(dir string) error
}

// Result is the image a service runs.
type Result struct {
	// Image is pinned by digest: repository@sha256:...
	Image string
	// TreeHash is the request's: the source the image was built from.
	TreeHash string
	// Built is true when a build ran; false when the image was found in the registry (or
	// an image service was resolved).
	Built bool
	// Duration is how long it took, waiting in the queue aside.
	Duration time.Duration
	// Log is the path of the build log when a build ran.
	Log string
}

// label is what formation and service names are (DNS labels, as gilliam.yml requires):
// they become folder, volume and repository names.
var label = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (r *Request) check() error {
	if !label.MatchString(r.Formation) || !label.MatchString(r.Service) {
		return fmt.Errorf("build: formation %q and service %q must be DNS labels", r.Formation, r.Service)
	}
	switch r.Kind {
	case "":
		r.Kind = KindBuildpack
	case KindBuildpack, KindDockerfile, KindImage:
	default:
		return fmt.Errorf("build %s/%s: unknown kind %q", r.Formation, r.Service, r.Kind)
	}
	if r.Kind == KindImage {
		if r.Image == "" {
			return fmt.Errorf("build %s/%s: an image service needs an image", r.Formation, r.Service)
		}
		return nil
	}
	if r.TreeHash == "" || r.Source == nil {
		return fmt.Errorf("build %s/%s: a %s service needs a tree hash and a source", r.Formation, r.Service, r.Kind)
	}
	return nil
}

// Build returns the image req's service runs, pinned by digest. An image service's
// reference is resolved now, so a release never changes under a moving tag. A built service
// is first looked up in the registry by SourceTag; only when absent does a build run, in the
// queue: at most Concurrency at once, one at a time per service, a request waiting there
// replaced by a newer one for the same service (ErrSuperseded), the same source requested
// twice built once. See errors.go for what the errors mean.
func (b *Builder) Build(ctx context.Context, req Request) (Result, error) {
	start := time.Now()
	if err := req.check(); err != nil {
		return Result{}, err
	}
	log := b.log.With("formation", req.Formation, "service", req.Service)
	if req.Kind == KindImage {
		pinned, err := b.resolve(ctx, req)
		if err != nil {
			return Result{}, err
		}
		log.Debug("image resolved", "image", req.Image, "pinned", pinned)
		return Result{Image: pinned, Duration: time.Since(start)}, nil
	}

	tag, err := b.tag(ctx, req)
	if err != nil {
		return Result{}, err
	}
	repo := Repository(b.cfg.Registry, req.Formation, req.Service)
	if pinned, found, err := find(ctx, b.cfg.Keychain, repo, tag); err != nil {
		return Result{}, err
	} else if found {
		b.published(pinned)
		log.Info("build skipped: this source was built already", "tree", short(req.TreeHash), "image", pinned)
		return Result{Image: pinned, TreeHash: req.TreeHash, Duration: time.Since(start)}, nil
	}
	res, err := b.queue.do(ctx, req.Formation+"/"+req.Service, tag, func(ctx context.Context) (Result, error) {
		return b.run(ctx, req, repo, tag, log.With("commit", short(req.Commit)))
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return res, fmt.Errorf("build %s/%s: %w", req.Formation, req.Service, err)
	}
	return res, err
}

// Lookup is Build without the build: the image req's service would run if it is in the
// registry already (found), for dry runs such as gilliam-sync plan. An image service is
// resolved; Source is never called.
func (b *Builder) Lookup(ctx context.Context, req Request) (image string, found bool, err error) {
	if err := req.check(); err != nil {
		return "", false, err
	}
	if req.Kind == KindImage {
		pinned, err := b.resolve(ctx, req)
		return pinned, err == nil, err
	}
	tag, err := b.tag(ctx, req)
	if err != nil {
		return "", false, err
	}
	return find(ctx, b.cfg.Keychain, Repository(b.cfg.Registry, req.Formation, req.Service), tag)
}

// resolve pins an image service's reference within the registry policy. A reference the
// policy refuses is a *FailedError: the repository must change it.
func (b *Builder) resolve(ctx context.Context, req Request) (string, error) {
	pinned, err := b.cfg.Registries.Resolve(ctx, req.Image)
	var perr *PolicyError
	if errors.As(err, &perr) {
		return "", &FailedError{Formation: req.Formation, Service: req.Service, Commit: req.Commit, Reason: perr.Error()}
	}
	return pinned, err
}

// registryHost is the registry part of a registry setting (host:port, maybe with a path).
func registryHost(registry string) string {
	host, _, _ := strings.Cut(registry, "/")
	return host
}

// tag names the image of req's source in the registry: its tree hash, what builds it and
// the build env. For buildpacks that is the builder's image ID, so a rebuilt builder builds
// everything again; a Dockerfile names its own base images, which the tag cannot see.
func (b *Builder) tag(ctx context.Context, req Request) (string, error) {
	if req.Kind == KindDockerfile {
		return SourceTag(req.TreeHash, KindDockerfile, req.Env), nil
	}
	id, err := b.pack.BuilderID(ctx)
	if err != nil {
		return "", err
	}
	return SourceTag(req.TreeHash, id, req.Env), nil
}

// run is one build, in its queue slot: sources written, built, published, logged.
func (b *Builder) run(ctx context.Context, req Request, repo, tag string, log *slog.Logger) (Result, error) {
	start := time.Now()
	// Built while this waited (by another daemon on the same registry)?
	if pinned, found, err := find(ctx, b.cfg.Keychain, repo, tag); err == nil && found {
		b.published(pinned)
		return Result{Image: pinned, TreeHash: req.TreeHash, Duration: time.Since(start)}, nil
	}
	timed, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()

	out, err := createLog(b.cfg.DataDir, req.Formation, req.Service, req.Commit, req.TreeHash, start, log)
	if err != nil {
		return Result{}, err
	}
	log.Info("building", "kind", req.Kind, "tree", short(req.TreeHash), "log", out.final)
	fmt.Fprintf(out, "gilliam-sync: building %s/%s (%s) at commit %s, tree %s, as %s:%s\n",
		req.Formation, req.Service, req.Kind, req.Commit, req.TreeHash, repo, tag)

	pinned, err := b.buildSource(timed, req, repo, tag, out)
	if err != nil {
		err = b.explain(ctx, timed, req, out, err)
		out.close("gilliam-sync: " + firstLine(err.Error()))
		log.Error("build failed", "err", firstLine(err.Error()), "log", out.final)
		return Result{}, err
	}
	took := time.Since(start)
	out.close(fmt.Sprintf("gilliam-sync: built %s in %s", pinned, took.Round(time.Millisecond)))
	b.published(pinned)
	if err := pruneLogs(b.cfg.DataDir, req.Formation, req.Service, b.cfg.LogsPerService); err != nil {
		log.Warn("build logs not pruned", "err", err)
	}
	log.Info("built", "image", pinned, "took", took.Round(time.Millisecond))
	return Result{Image: pinned, TreeHash: req.TreeHash, Built: true, Duration: took, Log: out.final}, nil
}

// buildSource writes the sources into a fresh folder and builds them by kind.
func (b *Builder) buildSource(ctx context.Context, req Request, repo, tag string, out *buildLog) (string, error) {
	src, err := os.MkdirTemp(filepath.Join(b.cfg.DataDir, "src"), req.Formation+"."+req.Service+"-")
	if err != nil {
		return "", fmt.Errorf("build %s/%s: %w", req.Formation, req.Service, err)
	}
	defer os.RemoveAll(src)
	if err := req.Source(src); err != nil {
		return "", fmt.Errorf("build %s/%s: write sources: %w", req.Formation, req.Service, err)
	}
	if req.Kind == KindDockerfile {
		return b.buildDockerfile(ctx, src, repo, tag, req, out)
	}
	res, err := b.pack.Build(ctx, PackRequest{Formation: req.Formation, Service: req.Service,
		Source: src, Tag: tag, Env: req.Env, Log: out, CacheFrom: req.CacheFrom})
	return res.Image, err
}

// explain turns a build error into what it means for the caller (see errors.go): a
// *FailedError when the build itself failed or timed out, the error as it is (retry)
// otherwise.
func (b *Builder) explain(ctx, timed context.Context, req Request, out *buildLog, err error) error {
	failed := func(reason string) error {
		return &FailedError{Formation: req.Formation, Service: req.Service, Commit: req.Commit,
			Reason: reason, Log: out.final, Tail: out.tail()}
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("build %s/%s: %w", req.Formation, req.Service, ctx.Err())
	case errors.Is(timed.Err(), context.DeadlineExceeded):
		return failed(fmt.Sprintf("timed out after %s", b.cfg.Timeout))
	}
	if reason, ok := codeFailure(err); ok {
		return failed(reason)
	}
	return fmt.Errorf("%w (build log: %s)", err, out.final)
}

// lifecycleStatus is how pack reports a lifecycle phase that exited non-zero.
var lifecycleStatus = regexp.MustCompile(`failed with status code: (\d+)`)

// codeFailure says whether err is the code's fault (building it again cannot help), and
// why. The lifecycle's exit codes say which phase failed: 20-29 detect (no buildpack
// recognised the code), 50-59 build (a buildpack failed: a compile error), 90-99 extend;
// the others (analyze, restore, export) are about the registry and the cache, worth a
// retry. A Dockerfile step that fails is the code's fault too.
func codeFailure(err error) (string, bool) {
	var step *dockerfileError
	if errors.As(err, &step) {
		return step.msg, true
	}
	m := lifecycleStatus.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	var code int
	fmt.Sscan(m[1], &code)
	switch code / 10 {
	case 2:
		return fmt.Sprintf("no buildpack recognised the code (lifecycle exit status %d)", code), true
	case 5:
		return fmt.Sprintf("a buildpack failed (lifecycle exit status %d)", code), true
	case 9:
		return fmt.Sprintf("an image extension failed (lifecycle exit status %d)", code), true
	}
	return "", false
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
