package build

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/daemon"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Pushing an image from the engine: the engine keeps layers uncompressed and knows only
// their uncompressed digests (diff IDs), while a registry names them by their compressed
// digests. go-containerregistry's engine image compresses every layer once to learn that
// digest, and each layer it sends once more. Here each layer is compressed at most once,
// into a file, and a layer this process compressed before (the run image's, the
// launcher's, buildpack layers a rebuild keeps) is not compressed at all: its compressed
// digest is remembered by diff ID, as the Docker engine does for its own pushes. The
// registry still gets what it lacks: a remembered layer it does not have is compressed
// then, to the same bytes (gzip at the same level is deterministic).

// (internal/testenv keeps whole compressed layers in memory instead: its tests push one
// small image to a new registry each, where remembered digests would save nothing.)

// compressedDigests are the compressed descriptors of layers this process compressed,
// by diff ID.
var compressedDigests = struct {
	sync.Mutex
	byDiffID map[v1.Hash]v1.Descriptor
}{byDiffID: map[v1.Hash]v1.Descriptor{}}

// maxRemembered bounds compressedDigests: past it, the memory starts again.
const maxRemembered = 4096

// layerCompression is the gzip level of pushed layers: go-containerregistry's, so a layer
// pushed here and one pushed by it have the same digest.
const layerCompression = gzip.BestSpeed

// PushStats says what a push compressed.
type PushStats struct {
	Layers     int // layers of the image
	Compressed int // layers compressed for this push
}

// pushEngineImage pushes the engine's image src to dst and returns its digest.
func pushEngineImage(ctx context.Context, src name.Reference, dst name.Reference, opts ...remote.Option) (v1.Hash, PushStats, error) {
	engine, err := daemon.Image(src, daemon.WithContext(ctx))
	if err != nil {
		return v1.Hash{}, PushStats{}, fmt.Errorf("read %s from the engine: %w", src, err)
	}
	dir, err := os.MkdirTemp("", "gilliam-push-")
	if err != nil {
		return v1.Hash{}, PushStats{}, err
	}
	defer os.RemoveAll(dir)
	img, stats, err := compressedOnce(engine, dir)
	if err != nil {
		return v1.Hash{}, stats, fmt.Errorf("compress %s: %w", src, err)
	}
	if err := remote.Write(dst, img, append(opts, remote.WithContext(ctx))...); err != nil {
		return v1.Hash{}, stats, fmt.Errorf("push %s: %w", dst, err)
	}
	digest, err := img.Digest()
	return digest, stats, err
}

// compressedOnce is engine with its layers compressed at most once, those compressed now
// in files under dir.
func compressedOnce(engine v1.Image, dir string) (v1.Image, PushStats, error) {
	raw, err := engine.RawConfigFile()
	if err != nil {
		return nil, PushStats{}, err
	}
	cf, err := engine.ConfigFile()
	if err != nil {
		return nil, PushStats{}, err
	}
	layers, err := engine.Layers()
	if err != nil {
		return nil, PushStats{}, err
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, PushStats{}, fmt.Errorf("%d layers for %d diff IDs", len(layers), len(cf.RootFS.DiffIDs))
	}
	stats := PushStats{Layers: len(layers)}
	sum := sha256.Sum256(raw)
	img := &onceImage{raw: raw, layers: map[v1.Hash]*onceLayer{},
		config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(raw)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2, Config: img.config}
	for i, l := range layers {
		diffID := cf.RootFS.DiffIDs[i]
		compressedDigests.Lock()
		desc, known := compressedDigests.byDiffID[diffID]
		compressedDigests.Unlock()
		ol := &onceLayer{desc: desc, open: func() (io.ReadCloser, error) { return gzipped(l) }}
		if !known {
			if ol, err = compressToFile(l, dir); err != nil {
				return nil, stats, err
			}
			stats.Compressed++
			compressedDigests.Lock()
			if len(compressedDigests.byDiffID) >= maxRemembered {
				compressedDigests.byDiffID = map[v1.Hash]v1.Descriptor{}
			}
			compressedDigests.byDiffID[diffID] = ol.desc
			compressedDigests.Unlock()
		}
		img.layers[ol.desc.Digest] = ol
		m.Layers = append(m.Layers, ol.desc)
	}
	if img.manifest, err = json.Marshal(m); err != nil {
		return nil, stats, err
	}
	out, err := partial.CompressedToImage(img)
	return out, stats, err
}

// compressToFile compresses l into a file of dir, learning its digest and size as it goes.
func compressToFile(l v1.Layer, dir string) (*onceLayer, error) {
	f, err := os.CreateTemp(dir, "layer-")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n := &countingWriter{w: io.MultiWriter(f, h)}
	if err := gzipTo(n, l); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	path := f.Name()
	return &onceLayer{
		desc: v1.Descriptor{MediaType: types.DockerLayer, Size: n.n, Digest: hashOf(h)},
		open: func() (io.ReadCloser, error) { return os.Open(path) },
	}, nil
}

// gzipped streams l compressed, for a remembered layer the registry turns out to lack.
func gzipped(l v1.Layer) (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(gzipTo(pw, l)) }()
	return pr, nil
}

func gzipTo(w io.Writer, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	gw, err := gzip.NewWriterLevel(w, layerCompression)
	if err != nil {
		return err
	}
	if _, err := io.Copy(gw, rc); err != nil {
		return err
	}
	return gw.Close()
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// onceImage is an image of the engine's config and compressed-once layers.
type onceImage struct {
	raw, manifest []byte
	config        v1.Descriptor
	layers        map[v1.Hash]*onceLayer
}

func (i *onceImage) RawConfigFile() ([]byte, error)      { return i.raw, nil }
func (i *onceImage) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *onceImage) MediaType() (types.MediaType, error) { return types.DockerManifestSchema2, nil }
func (i *onceImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	if h == i.config.Digest {
		return &onceLayer{desc: i.config, open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(i.raw)), nil }}, nil
	}
	return nil, fmt.Errorf("no layer %s", h)
}

// onceLayer is a compressed layer whose digest and size are known without reading it.
type onceLayer struct {
	desc v1.Descriptor
	open func() (io.ReadCloser, error)
}

func (l *onceLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *onceLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *onceLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *onceLayer) Compressed() (io.ReadCloser, error)  { return l.open() }
