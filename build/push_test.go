package build

import (
	"context"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A push from the engine compresses each layer once, and a layer this process compressed
// before not at all; the image pushed is the one go-containerregistry would push (the same
// digest), and a registry that lacks a remembered layer still gets it, whole.
func TestPushCompressesEachLayerAtMostOnce(t *testing.T) {
	docker := testenv.NewDocker(t)
	engineRef := docker.TestImage(t)
	src, err := name.ParseReference(engineRef)
	if err != nil {
		t.Fatal(err)
	}
	// What go-containerregistry's own engine image would push.
	plain, err := daemon.Image(src)
	if err != nil {
		t.Fatal(err)
	}
	want, err := plain.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	push := func(reg *testenv.Registry) PushStats {
		t.Helper()
		dst, err := name.NewTag(reg.Addr+"/app/web:1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		got, stats, err := pushEngineImage(ctx, src, dst)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("pushed %s, go-containerregistry would push %s", got, want)
		}
		// The registry holds it whole: every blob readable and matching its digest.
		img, err := remote.Image(dst)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed() // verified against its digest as it is read
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				t.Fatalf("layer in %s: %v", reg.Addr, err)
			}
		}
		return stats
	}
	compressedDigests.Lock()
	clear(compressedDigests.byDiffID)
	compressedDigests.Unlock()

	first := push(testenv.NewRegistry(t))
	if first.Compressed != first.Layers || first.Layers == 0 {
		t.Fatalf("first push: %+v, want every layer compressed once", first)
	}
	// Another registry, that has none of it: nothing compressed up front, every layer sent.
	second := push(testenv.NewRegistry(t))
	if second.Compressed != 0 {
		t.Fatalf("second push: %+v, want no layer compressed again", second)
	}
	t.Logf("first push %+v, second %+v", first, second)
}
