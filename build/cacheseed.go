package build

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	cerrdefs "github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// A preview's first build starts from a copy of its base formation's build caches
// (Request.CacheFrom): a pull request builds warm, as its base branch does. A copy, never the
// base's volumes themselves: the preview builds code from the pull request, which must not
// be able to leave anything in the cache the base branch's builds use next.

// seedCaches makes formation's cache volumes of a service copies of from's, when formation
// has none yet and from has some. It returns whether it copied. Failing to copy is not
// failing the build: it only builds cold.
func (b *Buildpacks) seedCaches(ctx context.Context, formation, service, from string, out io.Writer) bool {
	if from == "" || from == formation {
		return false
	}
	start := time.Now()
	copied := false
	for _, kind := range []string{"build", "launch"} {
		dst := names.CacheVolume(b.scope, formation, service, kind)
		src := names.CacheVolume(b.scope, from, service, kind)
		if _, err := b.docker.VolumeInspect(ctx, dst); err == nil || !cerrdefs.IsNotFound(err) {
			continue // it has its own (or the engine cannot say): leave it
		}
		if _, err := b.docker.VolumeInspect(ctx, src); err != nil {
			continue
		}
		if err := b.copyVolume(ctx, formation, service, src, dst); err != nil {
			fmt.Fprintf(out, "gilliam-sync: the %s cache of %s not copied from %s, building cold: %v\n", kind, formation, from, err)
			b.log.Warn("cache not copied", "formation", formation, "service", service, "from", from, "err", err)
			b.docker.VolumeRemove(context.WithoutCancel(ctx), dst, true)
			return false
		}
		copied = true
	}
	if copied {
		fmt.Fprintf(out, "gilliam-sync: build cache of %s/%s copied from %s's in %s\n", formation, service, from, time.Since(start).Round(time.Millisecond))
	}
	return copied
}

// copyVolume creates dst, labelled as cacheVolume labels its volumes, and copies src into
// it with the builder image's cp, as root (to keep owners), with no network.
func (b *Buildpacks) copyVolume(ctx context.Context, formation, service, src, dst string) error {
	_, err := b.docker.VolumeCreate(ctx, volume.CreateOptions{Name: dst, Labels: map[string]string{
		LabelFormation: formation, LabelService: service, LabelRegistry: b.registry,
	}})
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	cfg := &container.Config{
		Image:      b.builder,
		User:       "0:0",
		Entrypoint: []string{"cp"},
		Cmd:        []string{"-a", "/from/.", "/to/"},
		Labels:     map[string]string{LabelFormation: formation, LabelService: service, LabelRegistry: b.registry},
	}
	hc := &container.HostConfig{
		NetworkMode: "none",
		Mounts: []mount.Mount{
			{Type: mount.TypeVolume, Source: src, Target: "/from", ReadOnly: true},
			{Type: mount.TypeVolume, Source: dst, Target: "/to"},
		},
		CapDrop:     []string{"ALL"},
		CapAdd:      []string{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"},
		SecurityOpt: []string{"no-new-privileges:true"},
	}
	created, err := b.docker.ContainerCreate(ctx, cfg, hc, nil, nil, "")
	if err != nil {
		return fmt.Errorf("copy container: %w", err)
	}
	defer b.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	if err := b.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("copy container: %w", err)
	}
	results, errs := b.docker.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	select {
	case res := <-results:
		if res.StatusCode != 0 {
			return fmt.Errorf("cp exited with %d", res.StatusCode)
		}
		return nil
	case err := <-errs:
		return fmt.Errorf("copy container: %w", err)
	}
}
