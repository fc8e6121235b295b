package gitwatch

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

func TestJitterAndBackoff(t *testing.T) {
	w := &Watcher{cfg: RepoConfig{PollInterval: time.Minute}}
	lo, hi := time.Duration(float64(time.Minute)*(1-jitter)), time.Duration(float64(time.Minute)*(1+jitter))
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := w.jittered()
		if d < lo || d > hi {
			t.Fatalf("jittered %s outside [%s, %s]", d, lo, hi)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("jitter gave %d distinct waits in 1000", len(seen))
	}

	b := w.backoff()
	if b.InitialInterval != 15*time.Second || b.MaxInterval != 16*time.Minute || b.MaxElapsedTime != 0 {
		t.Fatalf("backoff %+v", b)
	}
	if first := retryWait(b, errors.New("connection refused")); first > 15*time.Second*3/2 {
		t.Fatalf("first retry after %s", first)
	}
	if stalled := retryWait(b, &StalledError{Reason: "credentials refused", Err: transport.ErrAuthorizationFailed}); stalled != b.MaxInterval {
		t.Fatalf("a stalled failure waits %s, want the cap %s", stalled, b.MaxInterval)
	}
	var last time.Duration
	for range 30 {
		last = retryWait(b, errors.New("connection refused"))
		if last < 0 || last > b.MaxInterval {
			t.Fatalf("backoff wait %s outside (0, %s]", last, b.MaxInterval)
		}
	}
	if last < b.MaxInterval/2 {
		t.Fatalf("after 30 failures the wait is %s, want it near the cap %s", last, b.MaxInterval)
	}
	long := (&Watcher{cfg: RepoConfig{PollInterval: time.Hour}}).backoff()
	if long.MaxInterval != 30*time.Minute {
		t.Fatalf("cap for an hourly poll: %s", long.MaxInterval)
	}
}

func TestPRNumber(t *testing.T) {
	for _, tc := range []struct {
		forge Forge
		ref   string
		want  int
	}{
		{GitHub, "refs/pull/12/head", 12},
		{Gitea, "refs/pull/3/head", 3},
		{GitLab, "refs/merge-requests/9/head", 9},
		{GitHub, "refs/merge-requests/9/head", 0},
		{GitLab, "refs/pull/9/head", 0},
		{GitHub, "refs/pull/12/merge", 0},
		{GitHub, "refs/pull/012/head", 0},
		{GitHub, "refs/pull/-1/head", 0},
		{GitHub, "refs/pull/x/head", 0},
		{"", "refs/pull/1/head", 0},
	} {
		if got := prNumber(tc.forge, tc.ref); got != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.forge, tc.ref, got, tc.want)
		}
		if tc.want > 0 && prRef(tc.forge, tc.want) != tc.ref {
			t.Errorf("prRef(%s, %d) = %s", tc.forge, tc.want, prRef(tc.forge, tc.want))
		}
	}
}

func TestRepoKey(t *testing.T) {
	same := []string{
		"https://github.com/Acme/Shop.git",
		"https://github.com/acme/shop",
		"https://github.com:443/acme/shop/",
		"http://github.com/acme/shop",
		"ssh://git@github.com/acme/shop.git",
		"ssh://git@github.com:22/acme/shop.git",
		"git@github.com:acme/shop.git",
		"git@github.com:/acme/shop.git",
	}
	for _, u := range same {
		if got := repoKey(u); got != "github.com/acme/shop" {
			t.Errorf("repoKey(%s) = %s", u, got)
		}
	}
	for u, want := range map[string]string{
		"ssh://git@gitea.example.com:2222/acme/shop.git": "gitea.example.com:2222/acme/shop",
		"http://127.0.0.1:3000/app.git":                  "127.0.0.1:3000/app",
		"/srv/git/app.git":                               "file:/srv/git/app.git",
	} {
		if got := repoKey(u); got != want {
			t.Errorf("repoKey(%s) = %s, want %s", u, got, want)
		}
	}
}

func TestURLScheme(t *testing.T) {
	for u, want := range map[string]string{
		"https://x/y":        "https",
		"SSH://git@x/y":      "ssh",
		"git@github.com:a/b": "ssh",
		"github.com:a/b":     "ssh",
		"/srv/git/a.git":     "file",
		"./a:b/c":            "file",
		"file:///srv/a.git":  "file",
		"relative/dir:x/y":   "file",
	} {
		if got := urlScheme(u); got != want {
			t.Errorf("urlScheme(%s) = %s, want %s", u, got, want)
		}
	}
}

func TestScrubAndClassify(t *testing.T) {
	raw := "https://bob:hunter2@git.example.com/a.git"
	inner := fmt.Errorf(`Get "%s/info/refs": %w`, raw, transport.ErrAuthenticationRequired)
	err := scrub(fmt.Errorf("list refs: %w", classify(inner)), raw)
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "bob") {
		t.Fatalf("credentials left: %v", err)
	}
	if !errors.Is(err, transport.ErrAuthenticationRequired) || !Stalled(err) {
		t.Fatalf("scrubbed error lost its meaning: %v", err)
	}
	if Stalled(classify(errors.New("connection refused"))) {
		t.Fatal("a network error is stalled")
	}
	tokenAsUser := "https://ghp_abc123@github.com/a/b.git"
	if err := scrub(fmt.Errorf("fetch %s: boom", tokenAsUser), tokenAsUser); strings.Contains(err.Error(), "ghp_abc123") {
		t.Fatalf("token left: %v", err)
	}
	if got := Sanitize(raw); got != "https://git.example.com/a.git" {
		t.Fatal(got)
	}
}

// The pack inspector reads object headers and the size a delta makes, and refuses what is
// over the limit; the real git server's packs go through it in checkout_test.go. Here the
// case git's own packing rarely produces: a small delta that makes a huge object.
func TestInspectPack(t *testing.T) {
	obj := func(typ int, size int, extra, content []byte) []byte {
		var b bytes.Buffer
		c := byte(typ<<4) | byte(size&0x0f)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c, size = byte(size&0x7f), size>>7
		}
		b.WriteByte(c)
		b.Write(extra)
		z := zlib.NewWriter(&b)
		z.Write(content)
		z.Close()
		return b.Bytes()
	}
	pack := func(objects ...[]byte) *bufio.Reader {
		var b bytes.Buffer
		b.WriteString("PACK")
		binary.Write(&b, binary.BigEndian, uint32(2))
		binary.Write(&b, binary.BigEndian, uint32(len(objects)))
		for _, o := range objects {
			b.Write(o)
		}
		b.Write(make([]byte, 20))
		return bufio.NewReader(&b)
	}
	delta := func(src, target uint64) []byte {
		d := binary.AppendUvarint(nil, src)
		d = binary.AppendUvarint(d, target)
		return append(d, 0x90, 0x10) // copy 16 bytes from offset 0
	}
	blob := bytes.Repeat([]byte("x"), 100)
	for _, tc := range []struct {
		name string
		pack *bufio.Reader
		want string
	}{
		{"small", pack(obj(packBlob, 100, nil, blob), obj(packOfsDelta, 4, []byte{0x05}, delta(100, 16))), ""},
		{"blob over", pack(obj(packBlob, 100, nil, blob), obj(packBlob, 2000, nil, bytes.Repeat([]byte("y"), 2000))), "a blob of 2000 bytes"},
		{"ofs delta over", pack(obj(packBlob, 100, nil, blob), obj(packOfsDelta, 5, []byte{0x05}, delta(100, 1<<40))), "a delta making an object of 1099511627776 bytes"},
		{"ref delta over", pack(obj(packBlob, 100, nil, blob), obj(packRefDelta, 5, make([]byte, 20), delta(100, 5000))), "a delta making an object of 5000 bytes"},
		{"unknown type", pack(obj(5, 1, nil, []byte("x"))), "unknown type 5"},
	} {
		err := inspectPack(tc.pack, 1000)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
