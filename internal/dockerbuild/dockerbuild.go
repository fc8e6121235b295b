package dockerbuild

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/pkg/jsonmessage"
)

// ImageBuilder is the part of the Docker client that Build uses.
type ImageBuilder interface {
	ImageBuild(ctx context.Context, context io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
}

// Options names and labels the image Build makes.
type Options struct {
	Tags   []string
	Labels map[string]string
	// BuildArgs are the Dockerfile's ARG values.
	BuildArgs map[string]string
	// NetworkMode is the network RUN steps run on (the engine's default when empty).
	NetworkMode string
	// Memory caps each RUN step's container, in bytes, swap included; CPUQuota its CPU
	// time in microseconds per 100 ms period. Zero: no cap.
	Memory, CPUQuota int64
	// CPUShares is each RUN step's CPU weight under contention (zero: the engine's, 1024).
	CPUShares int64
	// CgroupParent is the cgroup RUN steps' containers are created in (empty: the engine's).
	CgroupParent string
	// Log receives the builder's output; nil discards it.
	Log io.Writer
}

// Build builds the Dockerfile at the root of dir with the Docker engine's classic
// builder and returns the image ID. A base image the engine holds is used as it is (no
// re-pull); one it lacks is pulled by the engine, which fails where no registry can be
// reached (here: Dockerfiles start FROM scratch). A step that fails (a RUN exiting
// non-zero, a COPY of a missing file, a FROM of an absent image) comes back as a
// *jsonmessage.JSONError in the error chain; the engine's own failures do not.
func Build(ctx context.Context, docker ImageBuilder, dir string, opts Options) (string, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(pw, dir)) }()
	defer pr.Close()

	var args map[string]*string
	for k, v := range opts.BuildArgs {
		if args == nil {
			args = map[string]*string{}
		}
		args[k] = &v
	}
	resp, err := docker.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        opts.Tags,
		Labels:      opts.Labels,
		BuildArgs:   args,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
		NetworkMode: opts.NetworkMode,
		Memory:      opts.Memory,
		MemorySwap:  opts.Memory,
		CPUQuota:    opts.CPUQuota,
		CPUPeriod:   cpuPeriod(opts.CPUQuota),
		CPUShares:   opts.CPUShares,

		CgroupParent: opts.CgroupParent,
	})
	if err != nil {
		return "", fmt.Errorf("docker build %s: %w", dir, err)
	}
	defer resp.Body.Close()

	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	var id string
	aux := func(m jsonmessage.JSONMessage) {
		var v struct{ ID string }
		if m.Aux != nil && json.Unmarshal(*m.Aux, &v) == nil && v.ID != "" {
			id = v.ID
		}
	}
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, log, 0, false, aux); err != nil {
		return "", fmt.Errorf("docker build %s: %w", dir, err)
	}
	if id == "" {
		return "", fmt.Errorf("docker build %s: the engine reported no image id", dir)
	}
	return id, nil
}

// cpuPeriod is the period a CPU quota is counted in: 100 ms, or none without a quota.
func cpuPeriod(quota int64) int64 {
	if quota == 0 {
		return 0
	}
	return 100_000
}

// tarDir writes dir as a tar stream, keeping modes and symlinks, owned by 0:0.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() && !strings.HasSuffix(hdr.Name, "/") {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	return tw.Close()
}
