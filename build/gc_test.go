package build_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/dockerbuild"
	"github.com/gilliam-sync/gilliam-sync/internal/registry"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// GC removes what builds left that nothing uses, and nothing else: not another
// installation's volumes, not volumes or images without gilliam-sync's labels and names,
// not a registry image someone tagged by hand, nor one a kept release uses, nor one built
// within the grace period; and a dry run removes nothing at all.
func TestGCRemovesOnlyWhatIsOursAndUnused(t *testing.T) {
	d := testenv.NewDocker(t)
	ctx := context.Background()
	creds, err := registry.GenerateCredentials()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(t.TempDir(), nil, creds)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	data := t.TempDir()
	// The registry asks for credentials: the builder pushes, lists, deletes and collects
	// with the push credential, as gilliam-sync up gives it.
	b := newBuilder(t, addr, data, func(c *build.Config) { c.Keychain = registry.Keychain(addr, creds.Push) })
	auth := remote.WithAuthFromKeychain(registry.Keychain(addr, creds.Push))
	f := "gctest" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")

	// Cache volumes: one of a service gone (collected), the rest kept: a live service's,
	// another installation's (another registry), unlabelled, and labelled but not named so.
	vol := func(name string, labels map[string]string) string {
		if _, err := d.Client.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Client.VolumeRemove(context.Background(), name, true) })
		return name
	}
	ours := func(service, registry string) map[string]string {
		return map[string]string{build.LabelFormation: f, build.LabelService: service, build.LabelRegistry: registry}
	}
	deadVol := vol(build.CacheVolume(f, "dead"), ours("dead", addr))
	keptVols := []string{
		vol(build.CacheVolume(f, "live"), ours("live", addr)),
		vol(build.CacheVolume(f, "elsewhere"), ours("elsewhere", "registry.example.com:5000")),
		vol(build.CacheVolume(f, "nolabels"), nil),
		vol("not-a-cache-"+f, ours("dead", addr)),
	}

	// Registry images: built ones (source tags) of a live and a dead service, one a kept
	// release uses, one someone also tagged by hand; the builder's run image copy; a
	// repository that is not formation/service.
	push := func(repo string, tags ...string) string {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, tag := range tags {
			ref, _ := name.NewTag(addr+"/"+repo+":"+tag, name.Insecure)
			if err := remote.Write(ref, img, auth); err != nil {
				t.Fatalf("push %s: %v", ref, err)
			}
		}
		digest, _ := img.Digest()
		return addr + "/" + repo + "@" + digest.String()
	}
	released := push(f+"/live", "src-1")
	unused := push(f+"/live", "src-2")
	handTagged := push(f+"/live", "src-3", "stable")
	deadImage := push(f+"/dead", "src-4")
	runImage := push("gilliam/stack-run", "busybox")
	deep := push("team/tools/app", "src-5")

	// Two real Dockerfile builds of a live service: the first's local image is left
	// dangling (labelled) when the second takes its name; both were published just now.
	dockerfile := func(content string) build.Result {
		src := source{"Dockerfile": "FROM scratch\nCOPY file /file\nCMD [\"/file\"]\n", "file": content}
		req := src.request("gcweb", content)
		req.Kind = build.KindDockerfile
		res, err := b.Build(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	firstBuild, secondBuild := dockerfile("one"), dockerfile("two")
	t.Cleanup(func() {
		d.Client.ImageRemove(context.Background(), build.LocalImage(formation, "gcweb"), image.RemoveOptions{PruneChildren: true})
	})
	ourDangling := danglingOurs(t, d)
	if len(ourDangling) == 0 {
		t.Fatal("the first Dockerfile build left no dangling image")
	}

	// A dangling image that is not ours.
	foreign := foreignDangling(t, d)

	// Build logs: of a service gone (collected) and of a live one.
	for _, s := range []string{"dead", "live"} {
		dir := build.LogDir(data, f, s)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "20260101T000000.000000000Z-abc.log"), []byte("old build\n"), 0o644)
	}

	live := build.Live{
		Services: []build.Service{{Formation: f, Service: "live"}, {Formation: formation, Service: "gcweb"}},
		Images:   []string{released},
	}
	wantManifests := []string{deadImage, unused}
	slices.Sort(wantManifests)
	check := func(g build.Garbage, dry bool) {
		t.Helper()
		if !slices.Equal(g.Volumes, []string{deadVol}) {
			t.Errorf("dry=%v: volumes %v, want %v", dry, g.Volumes, deadVol)
		}
		for _, id := range ourDangling {
			if !slices.Contains(g.Images, id) {
				t.Errorf("dry=%v: our dangling image %s not collected (%v)", dry, id, g.Images)
			}
		}
		if slices.Contains(g.Images, foreign) {
			t.Errorf("dry=%v: a dangling image without our label was collected", dry)
		}
		if !slices.Equal(g.Manifests, wantManifests) {
			t.Errorf("dry=%v: manifests %v, want %v", dry, g.Manifests, wantManifests)
		}
		if !slices.Equal(g.Logs, []string{build.LogDir(data, f, "dead")}) {
			t.Errorf("dry=%v: logs %v", dry, g.Logs)
		}
	}

	g, err := b.GC(ctx, live, build.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	check(g, true)
	everythingThere := append([]string{deadVol}, keptVols...)
	assertVolumes(t, d, f, everythingThere)
	assertImages(t, d, append(ourDangling, foreign), nil)
	assertInRegistry(t, auth, []string{released, unused, handTagged, deadImage, runImage, deep, firstBuild.Image, secondBuild.Image}, nil)

	g, err = b.GC(ctx, live, build.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check(g, false)
	t.Logf("collected: %+v", g)
	assertVolumes(t, d, f, keptVols)
	assertImages(t, d, []string{foreign}, ourDangling)
	assertInRegistry(t, auth, []string{released, handTagged, runImage, deep, firstBuild.Image, secondBuild.Image}, []string{unused, deadImage})
	if _, err := os.Stat(build.LogDir(data, f, "dead")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("logs of the dead service: %v", err)
	}
	if _, err := os.Stat(build.LogDir(data, f, "live")); err != nil {
		t.Errorf("logs of the live service: %v", err)
	}
	if g.Blobs != 0 {
		t.Errorf("%d blobs freed, all younger than the grace period", g.Blobs)
	}

	// Past the grace period the build no release uses goes too, and the registry frees
	// the blobs of what was deleted; what is kept stays whole.
	live.Images = append(live.Images, secondBuild.Image)
	g, err = b.GC(ctx, live, build.GCOptions{Grace: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g.Manifests, []string{firstBuild.Image}) || g.Blobs == 0 {
		t.Fatalf("past the grace period: %+v, want %s collected and blobs freed", g, firstBuild.Image)
	}
	assertInRegistry(t, auth, []string{released, handTagged, runImage, deep, secondBuild.Image}, []string{firstBuild.Image})
}

// danglingOurs lists the dangling images carrying gilliam-sync's build label.
func danglingOurs(t *testing.T, d *testenv.Docker) []string {
	t.Helper()
	list, err := d.Client.ImageList(context.Background(), image.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, img := range list {
		if _, ok := img.Labels[build.LabelService]; ok && !build.Tagged(img.RepoTags) && img.Labels[build.LabelFormation] == formation {
			out = append(out, img.ID)
		}
	}
	return out
}

// foreignDangling makes a dangling image with the test's label only, and removes it at
// cleanup.
func foreignDangling(t *testing.T, d *testenv.Docker) string {
	t.Helper()
	ctx := context.Background()
	tag := "gilliam-test/gc-foreign:" + d.Label[testenv.TestLabel]
	var ids []string
	for _, content := range []string{"a", "b"} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY f /f\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "f"), []byte(content+d.Label[testenv.TestLabel]), 0o644)
		id, err := dockerbuild.Build(ctx, d.Client, dir, dockerbuild.Options{Tags: []string{tag}, Labels: d.Label})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	t.Cleanup(func() {
		for _, id := range ids {
			d.Client.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	return ids[0]
}

func assertVolumes(t *testing.T, d *testenv.Docker, f string, want []string) {
	t.Helper()
	var got []string
	list, err := d.Client.VolumeList(context.Background(), volume.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range list.Volumes {
		if strings.Contains(v.Name, f) {
			got = append(got, v.Name)
		}
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("volumes %v, want %v", got, want)
	}
}

func assertImages(t *testing.T, d *testenv.Docker, present, absent []string) {
	t.Helper()
	for _, id := range present {
		if _, err := d.Client.ImageInspect(context.Background(), id); err != nil {
			t.Errorf("image %s: %v, want it there", id, err)
		}
	}
	for _, id := range absent {
		if _, err := d.Client.ImageInspect(context.Background(), id); !errdefs.IsNotFound(err) {
			t.Errorf("image %s: %v, want it removed", id, err)
		}
	}
}

// assertInRegistry checks that the images present are there whole (manifest, config and
// layers) and the absent ones are gone.
func assertInRegistry(t *testing.T, auth remote.Option, present, absent []string) {
	t.Helper()
	for _, ref := range present {
		r, _ := name.ParseReference(ref, name.Insecure)
		img, err := remote.Image(r, auth)
		if err == nil {
			_, err = img.RawConfigFile()
		}
		if err == nil {
			layers, _ := img.Layers()
			for _, l := range layers {
				rc, lerr := l.Compressed()
				if lerr != nil {
					err = lerr
					break
				}
				rc.Close()
			}
		}
		if err != nil {
			t.Errorf("%s: %v, want it in the registry", ref, err)
		}
	}
	for _, ref := range absent {
		r, _ := name.ParseReference(ref, name.Insecure)
		_, err := remote.Head(r, auth)
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %v, want it deleted", ref, err)
		}
	}
}
