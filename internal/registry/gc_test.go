package registry_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

// blobsOf are the digests of an image's config and layers.
func blobsOf(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []v1.Hash{cfg}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, d)
	}
	return out
}

func blobFile(dir string, h v1.Hash) string { return filepath.Join(dir, "blobs", h.Algorithm, h.Hex) }

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// Deleting an image through the API leaves its blobs; CollectGarbage frees those, and only
// those: blobs of images still there stay, and so do blobs written or checked within the
// grace period (a push in progress). The images left survive a restart whole.
func TestCollectGarbageFreesBlobsOfDeletedImages(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	push := func(repo string) v1.Image {
		img, err := random.Image(2048, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.NewTag(host+"/"+repo+":v1", name.Insecure)
		if err := remote.Write(ref, img, pushAuth); err != nil {
			t.Fatal(err)
		}
		return img
	}
	kept, gone := push("team/kept"), push("team/gone")
	goneDigest, _ := gone.Digest()
	for _, ref := range []string{host + "/team/gone:v1", host + "/team/gone@" + goneDigest.String()} {
		r, _ := name.ParseReference(ref, name.Insecure)
		if err := remote.Delete(r, pushAuth); err != nil {
			t.Fatal(err)
		}
	}
	goneBlobs := blobsOf(t, gone)
	for _, h := range goneBlobs {
		if !exists(blobFile(dir, h)) {
			t.Fatalf("blob %s of the deleted image is already gone: this test needs them on disk", h)
		}
	}

	// Young blobs are spared: they may belong to a push in progress.
	if res, err := reg.CollectGarbage(time.Hour, false); err != nil || res.Blobs != 0 {
		t.Fatalf("young blobs collected: %+v, %v", res, err)
	}

	// Everything ages; then a client checks one of the deleted image's blobs, as a push
	// that reuses it would before putting its manifest.
	old := time.Now().Add(-2 * time.Hour)
	filepath.Walk(filepath.Join(dir, "blobs"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	checked := goneBlobs[1]
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/v2/team/other/blobs/"+checked.String(), nil)
	req.SetBasicAuth(testCreds.Pull.Username, testCreds.Pull.Password)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	dry, err := reg.CollectGarbage(time.Hour, true)
	if err != nil || dry.Blobs != len(goneBlobs)-1 || !dry.DryRun {
		t.Fatalf("dry run: %+v, %v; want %d blobs", dry, err, len(goneBlobs)-1)
	}
	for _, h := range goneBlobs {
		if !exists(blobFile(dir, h)) {
			t.Fatal("a dry run removed a blob")
		}
	}

	// Through the HTTP endpoint, as gilliam-sync gc reaches a registry in another process.
	resp, err := do(t, http.MethodPost, srv.URL+registry.GCPath+"?grace=1h", testCreds.Push)
	if err != nil {
		t.Fatal(err)
	}
	var res registry.GCResult
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || res.Blobs != len(goneBlobs)-1 || res.Bytes <= 0 {
		t.Fatalf("POST %s: %s %+v", registry.GCPath, resp.Status, res)
	}
	for _, h := range goneBlobs {
		if want := h == checked; exists(blobFile(dir, h)) != want {
			t.Fatalf("blob %s on disk: %v, want %v", h, !want, want)
		}
	}
	if resp, err := do(t, http.MethodGet, srv.URL+registry.GCPath, testCreds.Push); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET %s: %v %v", registry.GCPath, resp.Status, err)
	}

	// The kept image is whole, before and after a restart.
	srv.Close()
	reg, err = registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(reg)
	defer srv2.Close()
	host = strings.TrimPrefix(srv2.URL, "http://")
	keptRef, _ := name.NewTag(host+"/team/kept:v1", name.Insecure)
	got, err := remote.Image(keptRef, pushAuth)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := got.Layers()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("a layer of the kept image: %v", err)
		}
		rc.Close()
	}
	if _, err := got.RawConfigFile(); err != nil {
		t.Fatalf("the kept image's config: %v", err)
	}
	want, _ := kept.Digest()
	if d, _ := got.Digest(); d != want {
		t.Fatalf("kept image digest %s, want %s", d, want)
	}
}
