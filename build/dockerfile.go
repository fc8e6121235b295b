package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/dockerbuild"
)

// pidsCgroups says whether Dockerfile builds can be given a pids cap through a cgroup
// parent (pidscgroup.go): the engine uses the cgroupfs driver, on this machine, and this
// process may make cgroups. Decided once; when not, the log says so once.
func (b *Builder) pidsCgroups(ctx context.Context) bool {
	b.cgroupOnce.Do(func() {
		why := ""
		info, err := b.docker.Info(ctx)
		switch {
		case err != nil:
			why = err.Error()
		case info.CgroupDriver != "cgroupfs":
			why = "the engine's cgroup driver is " + info.CgroupDriver + ", not cgroupfs"
		case os.Getenv("DOCKER_HOST") != "" && !strings.HasPrefix(os.Getenv("DOCKER_HOST"), "unix://"):
			why = "the engine is not on this machine"
		default:
			cg, err := newPidsCgroup("probe", "probe", b.cfg.Isolation.Pids)
			if err != nil {
				why = err.Error()
			} else {
				cg.remove()
			}
		}
		b.cgroupOK = why == ""
		if !b.cgroupOK {
			b.log.Warn("Dockerfile builds run without a pids cap", "why", why)
		}
	})
	return b.cgroupOK
}

// dockerfileError is a Dockerfile step that failed: the code's fault.
type dockerfileError struct{ msg string }

func (e *dockerfileError) Error() string { return e.msg }

// LocalImage is the name a dockerfile service's latest build keeps in the Docker engine,
// where the classic builder finds its cached steps. Each build moves it, so the previous
// image is left dangling, labelled, for GC.
func LocalImage(formation, service string) string {
	return "gilliam.local/" + formation + "/" + service + ":latest"
}

// buildDockerfile builds the Dockerfile at the root of src with the engine's classic builder
// (a base image the engine holds is not pulled again), then pushes the image to
// repo:tag and returns it pinned by digest. Env becomes the build args. The Dockerfile is
// checked first (checkDockerfile), and its RUN steps run isolated (isolation.go).
func (b *Builder) buildDockerfile(ctx context.Context, src, repo, tag string, req Request, out io.Writer) (string, error) {
	text, err := os.ReadFile(filepath.Join(src, "Dockerfile"))
	if err != nil {
		return "", &dockerfileError{msg: "no Dockerfile at the root of the service's path"}
	}
	err = checkDockerfile(ctx, text, req.Env, dockerfilePolicy{
		urls:       b.cfg.Isolation.DockerfileURLs,
		registries: b.cfg.Registries,
		inEngine: func(ctx context.Context, ref string) bool {
			_, err := b.docker.ImageInspect(ctx, ref)
			return err == nil
		},
	})
	if err != nil {
		return "", err
	}
	iso := b.cfg.Isolation
	var parent string
	if b.pidsCgroups(ctx) {
		cg, err := newPidsCgroup(req.Formation, req.Service, iso.Pids)
		if err != nil {
			return "", err
		}
		defer func() {
			if err := cg.remove(); err != nil {
				b.log.Warn("build cgroup not removed", "cgroup", cg.Parent, "err", err)
			}
		}()
		parent = cg.Parent
	}
	local := LocalImage(req.Formation, req.Service)
	_, err = dockerbuild.Build(ctx, b.docker, src, dockerbuild.Options{
		CgroupParent: parent,
		Tags:         []string{local},
		Labels:       map[string]string{LabelFormation: req.Formation, LabelService: req.Service},
		BuildArgs:    req.Env,
		NetworkMode:  iso.Network,
		Memory:       iso.Memory,
		CPUQuota:     int64(iso.CPUs * 100_000),
		CPUShares:    BuildCPUShares,
		Log:          out,
	})
	var step *jsonmessage.JSONError
	if errors.As(err, &step) {
		return "", &dockerfileError{msg: "Dockerfile: " + step.Message}
	}
	if err != nil {
		return "", err
	}

	localRef, err := name.ParseReference(local)
	if err != nil {
		return "", err
	}
	dst, err := name.NewTag(repo+":"+tag, name.Insecure)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(out, "gilliam-sync: pushing %s\n", dst)
	digest, _, err := pushEngineImage(ctx, localRef, dst, remote.WithAuthFromKeychain(b.cfg.Keychain))
	if err != nil {
		return "", err
	}
	return repo + "@" + digest.String(), nil
}
