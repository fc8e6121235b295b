package testenv

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Images read from the engine are compressed once per test process: a push compresses
// every layer it sends (and once more to learn its digest), and under -race gzip is most of
// what a test package spends its CPU on (hostd's tests push the test app dozens of times).
var engineImages = struct {
	mu     sync.Mutex
	images map[string]v1.Image
}{images: map[string]v1.Image{}}

// engineImage is the engine's image ref with its layers compressed in memory, once.
func engineImage(ref name.Reference) (v1.Image, error) {
	engineImages.mu.Lock()
	defer engineImages.mu.Unlock()
	if img, ok := engineImages.images[ref.String()]; ok {
		return img, nil
	}
	src, err := daemon.Image(ref)
	if err != nil {
		return nil, err
	}
	cf, err := src.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := src.Layers()
	if err != nil {
		return nil, err
	}
	img := empty.Image
	for _, l := range layers {
		cl, err := compressOnce(l)
		if err != nil {
			return nil, fmt.Errorf("compress a layer of %s: %w", ref, err)
		}
		if img, err = mutate.AppendLayers(img, cl); err != nil {
			return nil, err
		}
	}
	// The engine's own config (its diff IDs are the layers' uncompressed digests).
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	engineImages.images[ref.String()] = img
	return img, nil
}

// compressedLayer is a layer whose compressed bytes are held in memory.
type compressedLayer struct {
	v1.Layer
	data   []byte
	digest v1.Hash
}

func compressOnce(l v1.Layer) (v1.Layer, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	digest, _, err := v1.SHA256(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return &compressedLayer{Layer: l, data: data, digest: digest}, nil
}

func (l *compressedLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *compressedLayer) Size() (int64, error)     { return int64(len(l.data)), nil }
func (l *compressedLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.data)), nil
}
