package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/volume"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/registry"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// gilliam-sync gc reads what is live from Consul (the desired services, the images of the
// releases stored) and removes the rest of what builds left: here a built image no release
// uses and the cache volume of a service gone. --dry-run only says so. With no formation in
// Consul (a wrong address or prefix, most likely) it refuses.
func TestGCCommand(t *testing.T) {
	ctx := context.Background()
	consul := testenv.NewConsul(t)
	d := testenv.NewDocker(t)
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
	f := "gccmd" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	// The registry asks who you are: gc reads the push credential from a Docker config, as
	// docs/security.md says to run it against gilliam-sync up's registry.
	dockerConfig := t.TempDir()
	if err := registry.WriteDockerConfig(filepath.Join(dockerConfig, "config.json"), addr, creds.Push); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dockerConfig)
	auth := remote.WithAuthFromKeychain(registry.Keychain(addr, creds.Push))

	push := func(repo, tag string) string {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.NewTag(addr+"/"+repo+":"+tag, name.Insecure)
		if err := remote.Write(ref, img, auth); err != nil {
			t.Fatal(err)
		}
		digest, _ := img.Digest()
		return addr + "/" + repo + "@" + digest.String()
	}
	released := push(f+"/web", "src-released")
	unused := push(f+"/web", "src-unused")

	store := state.NewStore(consul.Client, state.DefaultPrefix)
	rel := &state.Release{Formation: f, Service: "web", Image: released, Commit: "abc", Created: time.Now()}
	rel.ID = rel.ComputeID()
	if err := store.PutRelease(ctx, rel); err != nil {
		t.Fatal(err)
	}
	desired := &state.Desired{Formation: f, Services: map[string]state.DesiredService{
		"web": {Deployments: []state.Deployment{{Release: rel.ID, Scale: 1}}}}}
	if err := store.PutDesired(ctx, desired, 0); err != nil {
		t.Fatal(err)
	}

	gone := build.CacheVolume(f, "gone")
	if _, err := d.Client.VolumeCreate(ctx, volume.CreateOptions{Name: gone, Labels: map[string]string{
		build.LabelFormation: f, build.LabelService: "gone", build.LabelRegistry: addr}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Client.VolumeRemove(context.Background(), gone, true) })

	data := t.TempDir()
	gc := func(extra ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		args := append([]string{"gc", "--consul", consul.Addr, "--registry", addr, "--data", data}, extra...)
		code := run(ctx, args, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	present := func(ref string) bool {
		r, _ := name.ParseReference(ref, name.Insecure)
		_, err := remote.Head(r, auth)
		return err == nil
	}
	volumeThere := func() bool {
		_, err := d.Client.VolumeInspect(ctx, gone)
		return err == nil
	}

	code, out, errOut := gc("--dry-run")
	if code != 0 || !strings.Contains(out, "would remove registry  "+unused) || !strings.Contains(out, "would remove volume    "+gone) || strings.Contains(out, released) {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errOut)
	}
	if !present(unused) || !volumeThere() {
		t.Fatal("the dry run removed something")
	}

	code, out, errOut = gc()
	if code != 0 || !strings.Contains(out, "removed registry  "+unused) || !strings.Contains(out, "removed volume    "+gone) {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if present(unused) || volumeThere() || !present(released) {
		t.Fatalf("after gc: unused there %v, volume there %v, released there %v", present(unused), volumeThere(), present(released))
	}

	code, _, errOut = gc("--prefix", "elsewhere/")
	if code != 1 || !strings.Contains(errOut, "nothing removed: Consul holds no formation") {
		t.Fatalf("empty Consul: exit %d, %s", code, errOut)
	}
}
