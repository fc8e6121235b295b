package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	pubbldr "github.com/buildpacks/pack/builder"
	packclient "github.com/buildpacks/pack/pkg/client"
	packimage "github.com/buildpacks/pack/pkg/image"
	"github.com/buildpacks/pack/pkg/logging"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/internal/dockerbuild"
)

// hashLabel holds the hash of the inputs an image was made from.
const hashLabel = "io.gilliam.tools.input-hash"

type config struct {
	src        string // build/builder
	cache      string // where generated files go
	lifecycle  string // lifecycle tarball
	busybox    string // static busybox binary
	caBundle   string
	goroot     string
	name       string // the builder image
	buildImage string
	runImage   string
}

func main() {
	var c config
	flag.StringVar(&c.src, "src", "build/builder", "the builder's sources")
	flag.StringVar(&c.cache, "cache", ".cache/builder", "folder for generated files")
	flag.StringVar(&c.lifecycle, "lifecycle", "", "lifecycle tarball (required)")
	flag.StringVar(&c.busybox, "busybox", "", "static busybox binary (required)")
	flag.StringVar(&c.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA bundle copied into the stack")
	flag.StringVar(&c.goroot, "goroot", "", "Go installation the Go buildpack ships (default: go env GOROOT)")
	flag.StringVar(&c.name, "name", "gilliam/builder:offline", "builder image name")
	flag.StringVar(&c.buildImage, "build-image", "gilliam/stack-build:busybox", "build image name")
	flag.StringVar(&c.runImage, "run-image", "127.0.0.1:5000/gilliam/stack-run:busybox", "run image, named by its registry reference")
	flag.Parse()
	if c.lifecycle == "" || c.busybox == "" {
		fmt.Fprintln(os.Stderr, "mkbuilder: -lifecycle and -busybox are required")
		os.Exit(2)
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintf(os.Stderr, "mkbuilder: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	docker, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()

	if c.goroot == "" {
		out, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			return fmt.Errorf("go env GOROOT: %w", err)
		}
		c.goroot = strings.TrimSpace(string(out))
	}
	goVersion, err := os.ReadFile(filepath.Join(c.goroot, "VERSION"))
	if err != nil {
		return fmt.Errorf("go toolchain: %w", err)
	}

	stackHash, err := hashInputs(filepath.Join(c.src, "stack"), c.busybox, c.caBundle)
	if err != nil {
		return err
	}
	if err := ensure(ctx, docker, stackHash, []string{c.buildImage, c.runImage}, func() error {
		return buildStack(ctx, docker, c, stackHash)
	}); err != nil {
		return fmt.Errorf("stack: %w", err)
	}

	builderHash, err := hashInputs(filepath.Join(c.src, "buildpacks"), filepath.Join(c.src, "builder.toml"), c.lifecycle)
	if err != nil {
		return err
	}
	builderHash = hashStrings(builderHash, stackHash, string(goVersion), c.name, c.buildImage, c.runImage,
		strings.Join(seedPackages, " "))
	if err := ensure(ctx, docker, builderHash, []string{c.name}, func() error {
		return createBuilder(ctx, c, builderHash)
	}); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	return nil
}

// ensure calls make unless every image exists with the input hash label, then checks that
// make produced them.
func ensure(ctx context.Context, docker *client.Client, hash string, images []string, make func() error) error {
	missing, err := missingImages(ctx, docker, hash, images)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		fmt.Printf("mkbuilder: %s present\n", strings.Join(images, ", "))
		return nil
	}
	fmt.Printf("mkbuilder: building %s (missing or out of date: %s)\n", strings.Join(images, ", "), strings.Join(missing, ", "))
	start := time.Now()
	if err := make(); err != nil {
		return err
	}
	if missing, err = missingImages(ctx, docker, hash, images); err != nil {
		return err
	} else if len(missing) > 0 {
		return fmt.Errorf("%s still missing after the build", strings.Join(missing, ", "))
	}
	fmt.Printf("mkbuilder: built %s in %s\n", strings.Join(images, ", "), time.Since(start).Round(100*time.Millisecond))
	return nil
}

func missingImages(ctx context.Context, docker *client.Client, hash string, images []string) ([]string, error) {
	var missing []string
	for _, ref := range images {
		img, err := docker.ImageInspect(ctx, ref)
		switch {
		case errdefs.IsNotFound(err):
			missing = append(missing, ref)
		case err != nil:
			return nil, fmt.Errorf("inspect %s: %w", ref, err)
		case img.Config == nil || img.Config.Labels[hashLabel] != hash:
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// buildStack assembles the stack's root filesystem and builds it FROM scratch, tagged as both
// the build and the run image.
func buildStack(ctx context.Context, docker *client.Client, c config, hash string) error {
	dir := filepath.Join(c.cache, "stack")
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, d := range []string{"bin", "etc/ssl/certs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777|fs.ModeSticky); err != nil {
		return err
	}
	files := map[string]string{
		filepath.Join(c.src, "stack", "Dockerfile"): filepath.Join(dir, "Dockerfile"),
		filepath.Join(c.src, "stack", "passwd"):     filepath.Join(rootfs, "etc", "passwd"),
		filepath.Join(c.src, "stack", "group"):      filepath.Join(rootfs, "etc", "group"),
		c.caBundle:                                  filepath.Join(rootfs, "etc", "ssl", "certs", "ca-certificates.crt"),
		c.busybox:                                   filepath.Join(rootfs, "bin", "busybox"),
	}
	for from, to := range files {
		if err := copyFile(from, to); err != nil {
			return err
		}
	}
	// One link per applet, at the path busybox gives for it (bin/sh, usr/bin/env, ...).
	out, err := exec.Command(c.busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		link := filepath.Join(rootfs, applet)
		if applet == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !os.IsExist(err) {
			return err
		}
	}
	_, err = dockerbuild.Build(ctx, docker, dir, dockerbuild.Options{
		Tags:   []string{c.buildImage, c.runImage},
		Labels: map[string]string{hashLabel: hash},
		Log:    os.Stdout,
	})
	return err
}

// createBuilder lays out the Go buildpack with a trimmed copy of the Go toolchain, renders
// builder.toml and creates the builder with pack.
func createBuilder(ctx context.Context, c config, hash string) error {
	dir, err := filepath.Abs(filepath.Join(c.cache, "create"))
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	goBuildpack := filepath.Join(dir, "go-buildpack")
	if err := copyTree(filepath.Join(c.src, "buildpacks", "go"), goBuildpack, nil); err != nil {
		return err
	}
	if err := copyTree(c.goroot, filepath.Join(goBuildpack, "go"), skipInToolchain); err != nil {
		return err
	}
	if err := seedGoCache(filepath.Join(goBuildpack, "go"), filepath.Join(goBuildpack, "gocache")); err != nil {
		return err
	}

	procfile, err := filepath.Abs(filepath.Join(c.src, "buildpacks", "procfile"))
	if err != nil {
		return err
	}
	lifecycle, err := filepath.Abs(c.lifecycle)
	if err != nil {
		return err
	}
	tmpl, err := template.ParseFiles(filepath.Join(c.src, "builder.toml"))
	if err != nil {
		return err
	}
	var toml bytes.Buffer
	if err := tmpl.Execute(&toml, map[string]string{
		"GoBuildpack":       goBuildpack,
		"ProcfileBuildpack": procfile,
		"BuildImage":        c.buildImage,
		"RunImage":          c.runImage,
		"Lifecycle":         lifecycle,
	}); err != nil {
		return err
	}
	configPath := filepath.Join(dir, "builder.toml")
	if err := os.WriteFile(configPath, toml.Bytes(), 0o644); err != nil {
		return err
	}
	cfg, warnings, err := pubbldr.ReadConfig(configPath)
	if err != nil {
		return fmt.Errorf("read %s: %w", configPath, err)
	}
	for _, w := range warnings {
		fmt.Printf("mkbuilder: builder.toml: %s\n", w)
	}

	pack, err := packclient.NewClient(packclient.WithLogger(logging.NewSimpleLogger(os.Stdout)))
	if err != nil {
		return err
	}
	return pack.CreateBuilder(ctx, packclient.CreateBuilderOptions{
		RelativeBaseDir: dir,
		BuilderName:     c.name,
		Config:          cfg,
		Labels:          map[string]string{hashLabel: hash},
		PullPolicy:      packimage.PullNever,
	})
}

// seedPackages are the standard library packages whose compiled form the Go buildpack
// ships (with their dependencies, about 200 packages): what a web service commonly imports.
// Compiling them is most of a first build's time (several minutes of CPU on a busy 2-core
// machine, for the hello example); a first build starts from these instead.
var seedPackages = []string{
	"net/http", "net/http/httputil", "encoding/json", "encoding/csv", "log/slog", "html/template",
	"database/sql", "os/signal", "flag", "embed", "compress/gzip", "mime/multipart", "crypto/rand",
	"math/big", "regexp", "bufio", "sort", "strconv", "sync/atomic",
}

// seedGoCache compiles seedPackages with the buildpack's copy of the toolchain into a Go build
// cache at dir, with exactly the settings the buildpack's bin/build compiles with
// (CGO_ENABLED=0, -trimpath, nothing else from this machine's environment): the cache keys
// of standard packages built with -trimpath depend on the toolchain, the target and these
// flags, not on where GOROOT is, so the buildpack's builds find them.
func seedGoCache(goroot, dir string) error {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "mkbuilder-seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(filepath.Join(goroot, "bin", "go"), append([]string{"build"}, seedPackages...)...)
	cmd.Dir = tmp // outside any module
	cmd.Env = []string{"PATH=" + filepath.Join(goroot, "bin") + ":/usr/bin:/bin", "GOROOT=" + goroot,
		"GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOFLAGS=-trimpath", "GOENV=off", "GOPROXY=off",
		"GOCACHE=" + dir, "GOMODCACHE=" + filepath.Join(tmp, "mod"), "GOPATH=" + filepath.Join(tmp, "path"),
		"HOME=" + tmp, "TMPDIR=" + tmp}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("seed the Go build cache: %v\n%s", err, out)
	}
	// Readable by the cnb user that builds: the buildpack copies it into its cache layer.
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	}); err != nil {
		return err
	}
	fmt.Printf("mkbuilder: Go build cache of %d standard packages and their dependencies compiled in %s\n",
		len(seedPackages), time.Since(start).Round(100*time.Millisecond))
	return nil
}

// skipInToolchain trims the Go installation to what `go build` needs: no compiler sources,
// tests, test data or documentation (about 270 MB down to about 120 MB).
func skipInToolchain(rel string, d fs.DirEntry) bool {
	if d.IsDir() {
		switch rel {
		case "src/cmd", "test", "doc", "api", "misc", "lib/wasm", "pkg/obj":
			return true
		}
		return d.Name() == "testdata"
	}
	return strings.HasSuffix(rel, "_test.go")
}

// hashInputs hashes files and folders by path and content, in a stable order.
func hashInputs(paths ...string) (string, error) {
	h := sha256.New()
	for _, root := range paths {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			fmt.Fprintf(h, "%s %s %o\n", filepath.Base(root), rel, info.Mode())
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(h, f)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("hash inputs: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashStrings(s ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(s, "\x00")))
	return hex.EncodeToString(sum[:])
}

func copyTree(from, to string, skip func(rel string, d fs.DirEntry) bool) error {
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		rel = filepath.ToSlash(rel)
		if skip != nil && rel != "." && skip(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(to, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		default:
			return copyFile(path, target)
		}
	})
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
