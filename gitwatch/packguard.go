package gitwatch

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// go-git indexes a fetched pack by reading every object whole into memory once the pack
// has arrived (packfile.Parser.resolveDeltas), whatever its size: a push of a few hundred
// KB can carry a blob of 100 MiB (it compresses a thousandfold), and the fetch would hold
// it all. guardedStorage stops that before go-git gets there: the pack passes through an
// inspector that reads each object's header, and the size a delta produces, as the bytes
// arrive (inflating to nowhere, a few buffers of memory), and refuses a pack holding an
// object over the limit. The pack's last 20 bytes (its checksum) are held back until the
// inspector has seen every object: go-git does not start reading objects whole before it
// has them, so a refused pack is never read.
type guardedStorage struct {
	*filesystem.Storage
	limit int64
}

var _ storer.PackfileWriter = guardedStorage{}

// PackfileWriter is what go-git's fetch writes the pack into.
func (s guardedStorage) PackfileWriter() (io.WriteCloser, error) {
	w, err := s.Storage.PackfileWriter()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	g := &packGuard{w: w, pw: pw, done: make(chan error, 1)}
	go func() {
		err := inspectPack(bufio.NewReaderSize(pr, 64<<10), s.limit)
		if err != nil {
			err = &StalledError{Reason: "an object over checkout.max_file_bytes", Err: fmt.Errorf(
				"%w: raise the limit, or remove the object from the history of the refs fetched", err)}
			pr.CloseWithError(err) // the Write in flight, and every later one, fail with err
		} else {
			io.Copy(io.Discard, pr) // the trailer
		}
		g.done <- err
	}()
	return g, nil
}

// cleanTempPacks removes what refused fetches left in the cache (go-git keeps the
// temporary pack file when its index cannot be built).
func cleanTempPacks(dir string) {
	matches, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "tmp_pack_*"))
	for _, m := range matches {
		os.Remove(m)
	}
}

// packGuard forwards a pack to w once inspected, holding back its last 20 bytes until
// the inspector approves it.
type packGuard struct {
	w    io.WriteCloser
	pw   *io.PipeWriter
	done chan error
	tail []byte // the last bytes written, not yet forwarded (at most 20)
	err  error  // the inspector's verdict, once known
}

const packTrailer = 20

func (g *packGuard) Write(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if _, err := g.pw.Write(p); err != nil {
		g.err = err // the inspector refused the pack
		return 0, err
	}
	buf := append(g.tail, p...)
	cut := max(0, len(buf)-packTrailer)
	if _, err := g.w.Write(buf[:cut]); err != nil {
		return 0, err
	}
	g.tail = append([]byte(nil), buf[cut:]...)
	return len(p), nil
}

// Close waits for the inspector's verdict: approved, the held-back checksum goes through
// and go-git finishes the pack; refused, go-git gets a truncated pack and drops it.
func (g *packGuard) Close() error {
	g.pw.Close()
	if verdict := <-g.done; g.err == nil {
		g.err = verdict
	}
	if g.err != nil {
		g.w.Close() // a truncated pack: go-git's error is ours, less clear
		return g.err
	}
	if _, err := g.w.Write(g.tail); err != nil {
		g.w.Close()
		return err
	}
	return g.w.Close()
}

// Pack object types (gitformat-pack).
const (
	packCommit   = 1
	packTree     = 2
	packBlob     = 3
	packTag      = 4
	packOfsDelta = 6
	packRefDelta = 7
)

// inspectPack reads a pack's header and objects, and fails on one whose content (for a
// delta: the object it produces) is over limit. It reads the objects, not the trailer.
func inspectPack(r *bufio.Reader, limit int64) error {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return nil // an empty pack: nothing fetched
		}
		return fmt.Errorf("pack header: %w", err)
	}
	if string(hdr[:4]) != "PACK" {
		return errors.New("not a pack")
	}
	count := binary.BigEndian.Uint32(hdr[8:])
	var z io.ReadCloser
	for i := uint32(0); i < count; i++ {
		typ, size, err := objectHeader(r)
		if err != nil {
			return fmt.Errorf("object %d of the pack: %w", i, err)
		}
		switch typ {
		case packOfsDelta:
			for { // negative offset, MSB-continued
				b, err := r.ReadByte()
				if err != nil {
					return err
				}
				if b&0x80 == 0 {
					break
				}
			}
		case packRefDelta:
			if _, err := r.Discard(20); err != nil {
				return err
			}
		case packCommit, packTree, packBlob, packTag:
		default:
			return fmt.Errorf("object %d of the pack: unknown type %d", i, typ)
		}
		if typ != packOfsDelta && typ != packRefDelta && size > limit {
			return fmt.Errorf("a %s of %d bytes, over the limit of %d", typeName(typ), size, limit)
		}
		if z == nil {
			z, err = zlib.NewReader(r)
		} else {
			err = z.(zlib.Resetter).Reset(r, nil)
		}
		if err != nil {
			return fmt.Errorf("object %d of the pack: %w", i, err)
		}
		if typ == packOfsDelta || typ == packRefDelta {
			// A delta starts with the size of its base, then of the object it makes.
			dr := bufio.NewReaderSize(z, 16)
			if _, err := binary.ReadUvarint(dr); err != nil {
				return fmt.Errorf("object %d of the pack: delta: %w", i, err)
			}
			target, err := binary.ReadUvarint(dr)
			if err != nil {
				return fmt.Errorf("object %d of the pack: delta: %w", i, err)
			}
			if int64(target) > limit || int64(target) < 0 {
				return fmt.Errorf("a delta making an object of %d bytes, over the limit of %d", target, limit)
			}
			if _, err := io.Copy(io.Discard, dr); err != nil {
				return fmt.Errorf("object %d of the pack: %w", i, err)
			}
			continue
		}
		if _, err := io.Copy(io.Discard, z); err != nil {
			return fmt.Errorf("object %d of the pack: %w", i, err)
		}
	}
	return nil
}

// objectHeader reads an object's type and size: 3 bits of type and 4 of size in the
// first byte, 7 more bits of size in each byte that follows while the top bit is set.
func objectHeader(r io.ByteReader) (typ int, size int64, err error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	typ, size = int(b>>4)&7, int64(b&0x0f)
	for shift := 4; b&0x80 != 0; shift += 7 {
		if shift > 56 {
			return 0, 0, errors.New("object size overflows")
		}
		if b, err = r.ReadByte(); err != nil {
			return 0, 0, err
		}
		size |= int64(b&0x7f) << shift
	}
	return typ, size, nil
}

func typeName(typ int) string {
	return map[int]string{packCommit: "commit", packTree: "tree", packBlob: "blob", packTag: "tag"}[typ]
}
