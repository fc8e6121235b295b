package hostd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The engine's log stream comes in frames that need not end at a line's end.
func TestDemuxLines(t *testing.T) {
	var in bytes.Buffer
	frame := func(stream byte, s string) {
		hdr := [8]byte{stream}
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(s)))
		in.Write(hdr[:])
		in.WriteString(s)
	}
	frame(1, "one\ntw")
	frame(2, "err\n")
	frame(1, "o\n")
	var got []string
	if err := demux(&in, func(stream string, b []byte) error {
		got = append(got, stream+":"+string(b))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "stdout:one,stderr:err,stdout:two" {
		t.Fatalf("lines: %q", got)
	}
}

// A formation's log archive on a host never holds more than its bound: the oldest
// archives go first.
func TestArchiveIsBounded(t *testing.T) {
	d := &Daemon{cfg: Config{DataDir: t.TempDir(), LogArchiveBytes: 2500}}
	dir := d.archiveDir("shop")
	os.MkdirAll(dir, 0o700)
	for i := 1; i <= 5; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d-c%d.ndjson", i, i)), bytes.Repeat([]byte("x"), 1000), 0o600)
	}
	d.trimArchive(dir)
	left, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	if len(left) != 2 || !strings.HasSuffix(left[0], "-c4.ndjson") || !strings.HasSuffix(left[1], "-c5.ndjson") {
		t.Fatalf("left: %v", left)
	}
}
