package build

import (
	"context"
	"errors"
	"fmt"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/buildpacks/pack/pkg/blob"
	"github.com/buildpacks/pack/pkg/cache"
	packclient "github.com/buildpacks/pack/pkg/client"
	packimage "github.com/buildpacks/pack/pkg/image"
	"github.com/buildpacks/pack/pkg/index"
	"github.com/buildpacks/pack/pkg/logging"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	cerrdefs "github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	mobyclient "github.com/moby/moby/client"
)

// DefaultBuilder is the offline builder `make tools` creates from build/builder.
const DefaultBuilder = "gilliam/builder:offline"

// Buildpacks builds source folders with Cloud Native Buildpacks through pack's Go library,
// isolated (isolation.go), and publishes the images to a registry. It is the buildpack step
// of Builder, which adds the skip, the queue and the logs.
type Buildpacks struct {
	docker   *client.Client
	pack     *isolatedDocker // the client pack creates containers with
	builder  string
	registry string
	packHome string
	iso      Isolation
	keychain authn.Keychain
	scope    string // of the cache volumes
	log      *slog.Logger
}

// BuildpacksConfig configures NewBuildpacks.
type BuildpacksConfig struct {
	// Builder is the builder image, in the local engine or a registry; DefaultBuilder if empty.
	Builder string
	// Registry is where images are published: host:port, optionally with a path prefix.
	Registry string
	// PackHome is where pack keeps its downloads and manifests ($PACK_HOME for the pack
	// CLI); empty means pack's default, $PACK_HOME or ~/.pack.
	PackHome string
	// Isolation is what build containers may reach and use; zero values are the defaults
	// (no network).
	Isolation Isolation
	// Keychain gives registry credentials to pack and to the push; nil means the Docker
	// keychain.
	Keychain authn.Keychain
	// CacheScope names whose build caches these are (CacheVolume); empty: the registry,
	// so two installations sharing an engine never share a cache.
	CacheScope string
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
}

// NewBuildpacks returns a builder that publishes to cfg.Registry. It needs the Docker engine
// (the build runs in containers) and honours DOCKER_HOST.
func NewBuildpacks(cfg BuildpacksConfig) (*Buildpacks, error) {
	if cfg.Registry == "" {
		return nil, errors.New("buildpacks: no registry to publish to")
	}
	if cfg.Builder == "" {
		cfg.Builder = DefaultBuilder
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	scope := cfg.CacheScope
	if scope == "" {
		scope = strings.TrimSuffix(cfg.Registry, "/")
	}
	keychain := cfg.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	iso, err := cfg.Isolation.withDefaults()
	if err != nil {
		return nil, err
	}
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	moby, err := mobyclient.New(mobyclient.FromEnv)
	if err != nil {
		docker.Close()
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Buildpacks{docker: docker, pack: &isolatedDocker{Client: moby, iso: iso}, builder: cfg.Builder,
		registry: strings.TrimSuffix(cfg.Registry, "/"), packHome: cfg.PackHome, iso: iso, log: log, keychain: keychain, scope: scope}, nil
}

// Close closes the connections to the Docker engine.
func (b *Buildpacks) Close() error {
	return errors.Join(b.pack.Close(), b.docker.Close())
}

// Registry is where images are published.
func (b *Buildpacks) Registry() string { return b.registry }

// BuilderID identifies the builder's content (its image ID in the engine), for SourceTag: a
// rebuilt builder gives new tags, so sources are built again with it.
func (b *Buildpacks) BuilderID(ctx context.Context) (string, error) {
	img, err := b.docker.ImageInspect(ctx, b.builder)
	if err != nil {
		return "", fmt.Errorf("builder %s: %w", b.builder, err)
	}
	return img.ID, nil
}

// PackRequest is one source folder to build.
type PackRequest struct {
	Formation, Service string
	// Source is a folder holding the service's files (its path in the repository).
	Source string
	// Tag names the image in the registry, next to its digest: SourceTag gives one.
	Tag string
	// Env is the build-time environment given to the buildpacks.
	Env map[string]string
	// Log receives the build's output; nil discards it.
	Log io.Writer
	// CacheFrom is a formation whose caches of this service the first build of Formation
	// starts from (seedCaches): a preview's base.
	CacheFrom string
}

// PackResult is a built and published image.
type PackResult struct {
	// Image is the published image pinned by digest: registry/formation/service@sha256:...
	Image string
	// Duration is how long the build and the push took.
	Duration time.Duration
}

// Repository is where a service's images are published in registry.
func Repository(registry, formation, service string) string {
	return strings.TrimSuffix(registry, "/") + "/" + formation + "/" + service
}

// CacheVolume is the Docker volume holding a service's buildpack cache (the Go build cache,
// say) between builds, in a cache scope (BuildpacksConfig.CacheScope: by default the
// installation's registry, so two installations sharing an engine never share a cache;
// names.CacheVolume).
func CacheVolume(scope, formation, service string) string {
	return names.CacheVolume(scope, formation, service, "build")
}

// LaunchCacheVolume is the Docker volume holding a service's launch cache: the layers of
// its last image, which the exporter reuses instead of writing them again.
func LaunchCacheVolume(scope, formation, service string) string {
	return names.CacheVolume(scope, formation, service, "launch")
}

// Build builds req.Source and publishes it as Repository(...):req.Tag. The build runs
// into the local engine with no network (see isolation.go), and the image is then pushed
// from the engine to the registry by this process: the build containers never reach the
// registry, nor anything else, and hold no registry credential.
func (b *Buildpacks) Build(ctx context.Context, req PackRequest) (PackResult, error) {
	start := time.Now()
	repo := Repository(b.registry, req.Formation, req.Service)
	tagged := repo + ":" + req.Tag
	out := req.Log
	if out == nil {
		out = io.Discard
	}
	if err := b.checkDockerHost(); err != nil {
		return PackResult{}, err
	}
	b.seedCaches(ctx, req.Formation, req.Service, req.CacheFrom, out)
	volumeName, err := b.cacheVolume(ctx, req.Formation, req.Service)
	if err != nil {
		return PackResult{}, err
	}
	// A pack client logs through the logger it was made with; one per build keeps each
	// build's output apart.
	pack, err := b.packClient(out)
	if err != nil {
		return PackResult{}, err
	}
	// The image lands in the engine under its registry name; it is pushed from there and
	// the engine's copy removed, whatever happens.
	defer b.removeLocal(tagged)
	err = pack.Build(ctx, packclient.BuildOptions{
		AppPath:      req.Source,
		Builder:      b.builder,
		Image:        tagged,
		Env:          req.Env,
		Publish:      false,
		PullPolicy:   packimage.PullNever,
		TrustBuilder: func(string) bool { return true },
		// Named here, so pack neither derives names nor keeps keys for them in PACK_HOME.
		// The launch cache lets the exporter reuse unchanged layers in the engine.
		Cache: cache.CacheOpts{
			Build:  cache.CacheInfo{Format: cache.CacheVolume, Source: volumeName},
			Launch: cache.CacheInfo{Format: cache.CacheVolume, Source: LaunchCacheVolume(b.scope, req.Formation, req.Service)},
		},
		// -1 keeps the builder's user (cnb, 1000:1000); 0 would run buildpacks as root.
		UserID:  -1,
		GroupID: -1,
		// The docker client (isolatedDocker) sets it on every container too, with the limits.
		ContainerConfig: packclient.ContainerConfig{Network: b.iso.Network},
	})
	if err != nil {
		return PackResult{}, fmt.Errorf("build %s/%s with %s: %w", req.Formation, req.Service, b.builder, err)
	}
	pinned, err := pushFromEngine(ctx, b.keychain, tagged, repo, out)
	if err != nil {
		return PackResult{}, err
	}
	return PackResult{Image: pinned, Duration: time.Since(start)}, nil
}

// pushFromEngine pushes the engine's image local to the registry as local (a tag of repo)
// and returns it pinned by digest. Layers the registry holds already are not sent again,
// and layers this process compressed before are not compressed again (push.go).
func pushFromEngine(ctx context.Context, keychain authn.Keychain, local, repo string, out io.Writer) (string, error) {
	src, err := name.NewTag(local, name.Insecure)
	if err != nil {
		return "", err
	}
	start := time.Now()
	fmt.Fprintf(out, "gilliam-sync: pushing %s\n", local)
	digest, stats, err := pushEngineImage(ctx, src, src, remote.WithAuthFromKeychain(keychain))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(out, "gilliam-sync: pushed %s in %s (%d of %d layers compressed)\n", digest, time.Since(start).Round(time.Millisecond), stats.Compressed, stats.Layers)
	return repo + "@" + digest.String(), nil
}

// removeLocal removes the engine's copy of a built image once pushed (or failed): the
// registry is where images are kept. Layers the run image or the launch cache share stay.
func (b *Buildpacks) removeLocal(ref string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := b.docker.ImageRemove(ctx, ref, dockerimage.RemoveOptions{PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		b.log.Warn("built image not removed from the engine", "image", ref, "err", err)
	}
}

// checkDockerHost refuses an engine the lifecycle could not reach from a build container
// with no network: it talks to the engine through its unix socket, mounted in.
func (b *Buildpacks) checkDockerHost() error {
	host := os.Getenv("DOCKER_HOST")
	if host == "" || strings.HasPrefix(host, "unix://") {
		return nil
	}
	return fmt.Errorf("buildpack builds need the Docker engine's unix socket (DOCKER_HOST=%s): the build containers have no network to reach it by", host)
}

// packClient is a pack client logging to out, its downloads and manifests under PackHome
// when set, registry credentials from the Docker keychain.
func (b *Buildpacks) packClient(out io.Writer) (*packclient.Client, error) {
	opts := []packclient.Option{packclient.WithLogger(logging.NewLogWithWriters(out, out)),
		packclient.WithKeychain(b.keychain), packclient.WithDockerClient(b.pack)}
	if b.packHome != "" {
		opts = append(opts,
			packclient.WithDownloader(blob.NewDownloader(logging.NewSimpleLogger(out), filepath.Join(b.packHome, "download-cache"))),
			packclient.WithIndexFactory(index.NewIndexFactory(b.keychain, filepath.Join(b.packHome, "manifests"))))
	}
	pack, err := packclient.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("pack client: %w", err)
	}
	return pack, nil
}

// cacheVolume creates a service's cache volumes (the build cache, and the launch cache
// the exporter reuses layers from), labelled as this builder's, before pack uses them
// (Docker would create them without labels): garbage collection removes only volumes
// carrying these labels. An existing volume is kept as it is. It returns the build
// cache's name; the launch cache's is LaunchCacheVolume's.
func (b *Buildpacks) cacheVolume(ctx context.Context, formation, service string) (string, error) {
	for _, name := range []string{CacheVolume(b.scope, formation, service), LaunchCacheVolume(b.scope, formation, service)} {
		_, err := b.docker.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: map[string]string{
			LabelFormation: formation, LabelService: service, LabelRegistry: b.registry,
		}})
		if err != nil {
			return "", fmt.Errorf("cache volume %s: %w", name, err)
		}
	}
	return CacheVolume(b.scope, formation, service), nil
}
