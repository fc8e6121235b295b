package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/buildpacks/pack/pkg/blob"
	"github.com/buildpacks/pack/pkg/cache"
	packclient "github.com/buildpacks/pack/pkg/client"
	packimage "github.com/buildpacks/pack/pkg/image"
	"github.com/buildpacks/pack/pkg/index"
	"github.com/buildpacks/pack/pkg/logging"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// DefaultBuilder is the offline builder `make tools` creates from build/builder.
const DefaultBuilder = "gilliam/builder:offline"

// Buildpacks builds source folders with Cloud Native Buildpacks through pack's Go library
// and publishes the images straight to a registry. It is the buildpack step of Builder,
// which adds the skip, the queue and the logs.
type Buildpacks struct {
	docker   *client.Client
	builder  string
	registry string
	packHome string
	keychain authn.Keychain
	log      *slog.Logger

	// runImage is the run image the builder names, read once; the lifecycle's exporter
	// reads it from the target registry, where runImageMirror copies it.
	mu       sync.Mutex
	runImage string
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
	// Logger receives what happens; nil discards it.
	Logger *slog.Logger
	// Keychain gives registry credentials to pack, the lifecycle and the run image copy;
	// nil means the Docker keychain.
	Keychain authn.Keychain
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
	keychain := cfg.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Buildpacks{docker: docker, builder: cfg.Builder, registry: strings.TrimSuffix(cfg.Registry, "/"),
		packHome: cfg.PackHome, log: log, keychain: keychain}, nil
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
// say) between builds. Formation and service names are DNS labels, so the dots keep
// (a-b, c) and (a, b-c) apart.
func CacheVolume(formation, service string) string {
	return "gilliam-cache-" + formation + "." + service + ".build"
}

// Build builds req.Source and publishes it as Repository(...):req.Tag.
func (b *Buildpacks) Build(ctx context.Context, req PackRequest) (PackResult, error) {
	start := time.Now()
	repo := Repository(b.registry, req.Formation, req.Service)
	tagged := repo + ":" + req.Tag
	mirrors, err := b.runImageMirror(ctx)
	if err != nil {
		return PackResult{}, err
	}
	out := req.Log
	if out == nil {
		out = io.Discard
	}
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
	err = pack.Build(ctx, packclient.BuildOptions{
		AppPath:           req.Source,
		Builder:           b.builder,
		Image:             tagged,
		Env:               req.Env,
		Publish:           true,
		PullPolicy:        packimage.PullNever,
		TrustBuilder:      func(string) bool { return true },
		AdditionalMirrors: mirrors,
		// Named here, so pack neither derives names nor keeps keys for them in PACK_HOME.
		// The launch cache is only used by builds to the engine, never here.
		Cache: cache.CacheOpts{
			Build:  cache.CacheInfo{Format: cache.CacheVolume, Source: volumeName},
			Launch: cache.CacheInfo{Format: cache.CacheVolume, Source: strings.TrimSuffix(volumeName, ".build") + ".launch"},
		},
		// -1 keeps the builder's user (cnb, 1000:1000); 0 would run buildpacks as root.
		UserID:  -1,
		GroupID: -1,
		// The build containers must reach registries on 127.0.0.1.
		ContainerConfig: packclient.ContainerConfig{Network: "host"},
	})
	if err != nil {
		return PackResult{}, fmt.Errorf("build %s/%s with %s: %w", req.Formation, req.Service, b.builder, err)
	}
	ref, err := name.NewTag(tagged, name.Insecure)
	if err != nil {
		return PackResult{}, err
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(b.keychain))
	if err != nil {
		return PackResult{}, fmt.Errorf("resolve %s: %w", tagged, err)
	}
	return PackResult{Image: repo + "@" + desc.Digest.String(), Duration: time.Since(start)}, nil
}

// packClient is a pack client logging to out, its downloads and manifests under PackHome
// when set, registry credentials from the Docker keychain.
func (b *Buildpacks) packClient(out io.Writer) (*packclient.Client, error) {
	opts := []packclient.Option{packclient.WithLogger(logging.NewLogWithWriters(out, out)),
		packclient.WithKeychain(b.keychain)}
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

// cacheVolume creates a service's cache volume, labelled as this builder's, before pack
// uses it (Docker would create it without labels): garbage collection removes only
// volumes carrying these labels. An existing volume is kept as it is.
func (b *Buildpacks) cacheVolume(ctx context.Context, formation, service string) (string, error) {
	name := CacheVolume(formation, service)
	_, err := b.docker.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: map[string]string{
		LabelFormation: formation, LabelService: service, LabelRegistry: b.registry,
	}})
	if err != nil {
		return "", fmt.Errorf("cache volume %s: %w", name, err)
	}
	return name, nil
}

// runImageMirror makes sure the builder's run image can be read from the target registry,
// where the lifecycle's exporter looks for it: when it is not there (a new registry, or one
// that lost it), it is copied from the local engine. It returns the mirror to hand pack when
// the copy has another name than the one the builder gives (the offline builder names it in
// 127.0.0.1:5000). A run image the engine does not hold is left to pack to find where the
// builder names it (a public builder's run image in its public registry).
func (b *Buildpacks) runImageMirror(ctx context.Context) (map[string][]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.runImage == "" {
		pack, err := b.packClient(io.Discard)
		if err != nil {
			return nil, err
		}
		info, err := pack.InspectBuilder(b.builder, true)
		if err != nil || info == nil {
			return nil, fmt.Errorf("inspect builder %s: %v (is it in the engine? make tools builds the default one)", b.builder, err)
		}
		if len(info.RunImages) == 0 {
			return nil, fmt.Errorf("builder %s names no run image", b.builder)
		}
		b.runImage = info.RunImages[0].Image
	}
	run := b.runImage
	src, err := name.ParseReference(run, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("run image %s: %w", run, err)
	}
	target := b.registry + "/" + src.Context().RepositoryStr() + ":" + tagOf(src)
	dst, err := name.ParseReference(target, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("run image mirror %s: %w", target, err)
	}
	auth := remote.WithAuthFromKeychain(b.keychain)
	if _, err := remote.Head(dst, remote.WithContext(ctx), auth); err != nil {
		img, err := daemon.Image(src, daemon.WithContext(ctx))
		if err != nil {
			b.log.Debug("run image not in the engine; pack will look for it where the builder names it", "run_image", run, "err", err)
			return nil, nil
		}
		if err := remote.Write(dst, img, remote.WithContext(ctx), auth); err != nil {
			return nil, fmt.Errorf("copy run image %s to %s: %w", run, target, err)
		}
		b.log.Info("copied the builder's run image to the registry", "run_image", run, "copy", target)
	}
	if target == run {
		return nil, nil
	}
	return map[string][]string{run: {target}}, nil
}

func tagOf(ref name.Reference) string {
	if t, ok := ref.(name.Tag); ok {
		return t.TagStr()
	}
	return "latest"
}
