package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

// Live is what garbage collection must keep, as the caller knows it: build does not read
// the desired state, so the caller (the sync daemon, gilliam-sync gc) gathers it from
// Consul. An empty Live means nothing is kept: a caller that could not read the state must
// not call GC.
type Live struct {
	// Services are the (formation, service) pairs that still exist.
	Services []Service
	// Images are the images of every release kept (the ones deployed and the last few of
	// each service: the retention is the caller's), pinned by digest.
	Images []string
}

// Service names a service of a formation.
type Service struct{ Formation, Service string }

// GCOptions tunes GC.
type GCOptions struct {
	// DryRun reports what would be removed, and removes nothing.
	DryRun bool
	// Grace spares the images this data dir's builds published or found lately (default
	// one hour), since a build that just ended may not be in a release yet; it is also the
	// age under which the embedded registry keeps an unreferenced blob, which a push in
	// progress may be about to name.
	Grace time.Duration
}

// Garbage is what GC removed (or, dry, would remove).
type Garbage struct {
	// Volumes are cache volumes of services that no longer exist.
	Volumes []string
	// Images are dangling images left by Dockerfile builds (IDs).
	Images []string
	// Manifests are registry images no kept release uses: repository@sha256:...
	Manifests []string
	// Logs are build log folders of services that no longer exist.
	Logs []string
	// Blobs and BlobBytes are what the embedded registry freed once the manifests were
	// deleted (zero for another registry: it has its own garbage collection).
	Blobs     int
	BlobBytes int64
	// Skipped are things found to remove but left, with why (a volume in use).
	Skipped []string
}

// GC removes what builds left behind and nothing uses any more, touching only what
// gilliam-sync made: cache volumes carrying this builder's labels (LabelRegistry is its
// registry) of services not in live; dangling images labelled by Dockerfile builds; in the
// registry, images of formation/service repositories whose every tag is a source tag
// (SourceTag's "src-" prefix) and that no kept release uses; and the build logs of
// services that no longer exist. It goes on past a failure and returns them all.
func (b *Builder) GC(ctx context.Context, live Live, opts GCOptions) (Garbage, error) {
	if opts.Grace <= 0 {
		opts.Grace = time.Hour
	}
	var g Garbage
	services := map[Service]bool{}
	for _, s := range live.Services {
		services[s] = true
	}
	keep, err := b.recentlyPublished(opts.Grace, opts.DryRun)
	if err != nil {
		return g, err
	}
	for _, img := range live.Images {
		if _, digest, ok := strings.Cut(img, "@"); ok {
			keep[digest] = true
		}
	}
	errs := []error{
		b.gcVolumes(ctx, services, opts.DryRun, &g),
		b.gcImages(ctx, opts.DryRun, &g),
		b.gcRegistry(ctx, keep, opts, &g),
		b.gcLogs(services, opts.DryRun, &g),
	}
	return g, errors.Join(errs...)
}

func (b *Builder) gcVolumes(ctx context.Context, live map[Service]bool, dry bool, g *Garbage) error {
	list, err := b.docker.VolumeList(ctx, volume.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", LabelRegistry+"="+b.cfg.Registry)),
	})
	if err != nil {
		return fmt.Errorf("gc: list volumes: %w", err)
	}
	var errs []error
	for _, v := range list.Volumes {
		s := Service{v.Labels[LabelFormation], v.Labels[LabelService]}
		if !strings.HasPrefix(v.Name, "gilliam-cache-") || v.Labels[LabelRegistry] != b.cfg.Registry || live[s] {
			continue
		}
		if !dry {
			err := b.docker.VolumeRemove(ctx, v.Name, false)
			if errdefs.IsConflict(err) {
				g.Skipped = append(g.Skipped, "volume "+v.Name+": in use")
				continue
			}
			if err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("gc: remove volume %s: %w", v.Name, err))
				continue
			}
		}
		g.Volumes = append(g.Volumes, v.Name)
	}
	return errors.Join(errs...)
}

func (b *Builder) gcImages(ctx context.Context, dry bool, g *Garbage) error {
	list, err := b.docker.ImageList(ctx, image.ListOptions{
		Filters: filters.NewArgs(filters.Arg("dangling", "true"), filters.Arg("label", LabelService)),
	})
	if err != nil {
		return fmt.Errorf("gc: list images: %w", err)
	}
	var errs []error
	for _, img := range list {
		if _, ours := img.Labels[LabelService]; !ours || Tagged(img.RepoTags) {
			continue
		}
		if !dry {
			_, err := b.docker.ImageRemove(ctx, img.ID, image.RemoveOptions{PruneChildren: true})
			if errdefs.IsConflict(err) {
				g.Skipped = append(g.Skipped, "image "+img.ID+": in use")
				continue
			}
			if err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("gc: remove image %s: %w", img.ID, err))
				continue
			}
		}
		g.Images = append(g.Images, img.ID)
	}
	return errors.Join(errs...)
}

// Tagged says whether an image listed by the engine has a name: engines before API 1.43
// (Docker 24) list "<none>:<none>" for an image without one.
func Tagged(repoTags []string) bool {
	return slices.ContainsFunc(repoTags, func(t string) bool { return t != "<none>:<none>" })
}

// gcRegistry deletes the images of formation/service repositories that carry only source
// tags and are not kept, then asks the registry to free their blobs when it is the
// embedded one. A tag given by someone else (latest, v1.2) keeps its image.
func (b *Builder) gcRegistry(ctx context.Context, keep map[string]bool, opts GCOptions, g *Garbage) error {
	host, prefix, _ := strings.Cut(b.cfg.Registry, "/")
	reg, err := name.NewRegistry(host, name.Insecure)
	if err != nil {
		return fmt.Errorf("gc: registry %s: %w", host, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(b.cfg.Keychain)}
	repos, err := remote.Catalog(ctx, reg, ropts...)
	if err != nil {
		return fmt.Errorf("gc: list repositories of %s: %w", host, err)
	}
	if prefix != "" {
		prefix += "/"
	}
	var errs []error
	for _, repoName := range repos {
		parts := strings.Split(strings.TrimPrefix(repoName, prefix), "/")
		if !strings.HasPrefix(repoName, prefix) || len(parts) != 2 || !label.MatchString(parts[0]) || !label.MatchString(parts[1]) {
			continue
		}
		repo := reg.Repo(repoName)
		tags, err := remote.List(repo, ropts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("gc: list tags of %s: %w", repo, err))
			continue
		}
		byDigest := map[string][]string{}
		for _, t := range tags {
			desc, err := remote.Head(repo.Tag(t), ropts...)
			if err != nil {
				errs = append(errs, fmt.Errorf("gc: %s:%s: %w", repo, t, err))
				continue
			}
			byDigest[desc.Digest.String()] = append(byDigest[desc.Digest.String()], t)
		}
		for digest, tags := range byDigest {
			if keep[digest] || slices.ContainsFunc(tags, func(t string) bool { return !strings.HasPrefix(t, sourceTagPrefix) }) {
				continue
			}
			if !opts.DryRun {
				if err := deleteImage(repo, digest, tags, ropts); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			g.Manifests = append(g.Manifests, repo.String()+"@"+digest)
		}
	}
	slices.Sort(g.Manifests)
	if len(g.Manifests) > 0 && !opts.DryRun {
		if err := b.collectBlobs(ctx, reg, opts.Grace, g); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// deleteImage deletes an image's tags, then the image. A registry that deletes the tags
// with the image (distribution) refuses tag deletes: only the last delete must succeed.
func deleteImage(repo name.Repository, digest string, tags []string, ropts []remote.Option) error {
	for _, t := range tags {
		_ = remote.Delete(repo.Tag(t), ropts...)
	}
	err := remote.Delete(repo.Digest(digest), ropts...)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gc: delete %s@%s: %w", repo, digest, err)
	}
	return nil
}

// collectBlobs asks the embedded registry (internal/registry) to free the blobs no
// manifest references any more. Another registry answers 404 or 405: its blobs are its own
// garbage collector's business.
func (b *Builder) collectBlobs(ctx context.Context, reg name.Registry, grace time.Duration, g *Garbage) error {
	u := url.URL{Scheme: reg.Scheme(), Host: reg.RegistryStr(), Path: registry.GCPath,
		RawQuery: url.Values{"grace": {grace.String()}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return err
	}
	// The embedded registry collects garbage for its push credential only.
	if err := authorize(req, b.cfg.Keychain, reg); err != nil {
		return fmt.Errorf("gc: registry blobs: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("gc: registry blobs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gc: registry blobs: %s", resp.Status)
	}
	var res registry.GCResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("gc: registry blobs: %w", err)
	}
	g.Blobs, g.BlobBytes = res.Blobs, res.Bytes
	return nil
}

// gcLogs removes the build logs of services that no longer exist, unless a build of
// theirs is running.
func (b *Builder) gcLogs(live map[Service]bool, dry bool, g *Garbage) error {
	root := filepath.Join(b.cfg.DataDir, "logs")
	formations, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("gc: build logs: %w", err)
	}
	var errs []error
	for _, f := range formations {
		services, err := os.ReadDir(filepath.Join(root, f.Name()))
		if err != nil {
			continue
		}
		for _, s := range services {
			if live[Service{f.Name(), s.Name()}] {
				continue
			}
			logs, err := Logs(b.cfg.DataDir, f.Name(), s.Name())
			if err != nil || slices.ContainsFunc(logs, func(l LogFile) bool { return l.Running }) {
				continue
			}
			dir := LogDir(b.cfg.DataDir, f.Name(), s.Name())
			if !dry {
				if err := os.RemoveAll(dir); err != nil {
					errs = append(errs, fmt.Errorf("gc: %w", err))
					continue
				}
			}
			g.Logs = append(g.Logs, dir)
		}
		if !dry {
			os.Remove(filepath.Join(root, f.Name())) // only when empty
		}
	}
	return errors.Join(errs...)
}

// published notes that an image was just built or found for a release to come: GC spares
// it for a grace period, since the release naming it may not be written yet. The note is a
// file named for the digest, its time the note's.
func (b *Builder) published(pinned string) {
	_, digest, ok := strings.Cut(pinned, "@")
	if !ok {
		return
	}
	path := filepath.Join(b.cfg.DataDir, "published", strings.ReplaceAll(digest, ":", "-"))
	if err := os.WriteFile(path, nil, 0o644); err != nil { // a rewrite renews the time
		b.log.Warn("note published image", "err", err)
	}
}

// recentlyPublished are the digests noted within grace; older notes are removed.
func (b *Builder) recentlyPublished(grace time.Duration, dry bool) (map[string]bool, error) {
	dir := filepath.Join(b.cfg.DataDir, "published")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("gc: %w", err)
	}
	recent := map[string]bool{}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if time.Since(info.ModTime()) < grace {
			recent[strings.Replace(e.Name(), "-", ":", 1)] = true
		} else if !dry {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return recent, nil
}

// authorize sets req's Authorization from keychain's credentials for reg, if it has any.
func authorize(req *http.Request, keychain authn.Keychain, reg name.Registry) error {
	a, err := authn.Resolve(req.Context(), keychain, reg)
	if err != nil {
		return err
	}
	cfg, err := authn.Authorization(req.Context(), a)
	if err != nil {
		return err
	}
	switch {
	case cfg.Username != "" || cfg.Password != "":
		req.SetBasicAuth(cfg.Username, cfg.Password)
	case cfg.RegistryToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.RegistryToken)
	case cfg.Auth != "":
		req.Header.Set("Authorization", "Basic "+cfg.Auth)
	}
	return nil
}
