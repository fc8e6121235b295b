package registry_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

// Everything pushed survives a restart of the registry on the same folder: blobs, manifests
// by digest and by tag, and deletions.
func TestRestartKeepsImages(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	host := strings.TrimPrefix(srv.URL, "http://")

	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(host+"/team/app:v1", name.Insecure)
	if err := remote.Write(tag, img, pushAuth); err != nil {
		t.Fatal(err)
	}
	gone, _ := random.Image(512, 1)
	goneTag, _ := name.NewTag(host+"/team/old:v1", name.Insecure)
	if err := remote.Write(goneTag, gone, pushAuth); err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(goneTag, pushAuth); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	srv.Close()

	// Same folder, new process (in effect), new address.
	reg, err = registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv = httptest.NewServer(reg)
	defer srv.Close()
	host = strings.TrimPrefix(srv.URL, "http://")

	for _, ref := range []string{host + "/team/app:v1", host + "/team/app@" + digest.String()} {
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		got, err := remote.Image(r, pushAuth)
		if err != nil {
			t.Fatalf("%s after restart: %v", ref, err)
		}
		if d, _ := got.Digest(); d != digest {
			t.Fatalf("%s: digest %s, want %s", ref, d, digest)
		}
		// Layers too, not only the manifest.
		layers, _ := got.Layers()
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("layer of %s: %v", ref, err)
			}
			rc.Close()
		}
	}
	old, _ := name.NewTag(host+"/team/old:v1", name.Insecure)
	if _, err := remote.Head(old, pushAuth); err == nil {
		t.Fatal("a deleted tag came back after restart")
	}
}
