package gitwatch_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// crafter writes objects straight into the object store of a working clone, the way an
// attacker builds trees git's own commands refuse to make: names with slashes, "..",
// ".git", control characters, a link and a folder of the same name. Trees are encoded by
// hand (go-git's encoder refuses some of these names); nothing checks them on the way:
// git push does not, and the harness's server, like Gitea or a bare repository on a path,
// does not fsck what it receives.
type crafter struct {
	t  testing.TB
	st storer.EncodedObjectStorer
	r  *testenv.GitRepo
}

func newCrafter(t testing.TB, r *testenv.GitRepo) *crafter {
	g, err := git.PlainOpen(r.Work)
	if err != nil {
		t.Fatal(err)
	}
	return &crafter{t: t, st: g.Storer, r: r}
}

// ent is one raw tree entry: mode as git writes it (100644, 100755, 120000, 40000).
type ent struct {
	mode, name string
	hash       plumbing.Hash
}

func (c *crafter) put(typ plumbing.ObjectType, content []byte) plumbing.Hash {
	o := c.st.NewEncodedObject()
	o.SetType(typ)
	w, _ := o.Writer()
	w.Write(content)
	w.Close()
	h, err := c.st.SetEncodedObject(o)
	if err != nil {
		c.t.Fatal(err)
	}
	return h
}

func (c *crafter) file(name, content string) ent {
	return ent{"100644", name, c.put(plumbing.BlobObject, []byte(content))}
}
func (c *crafter) exe(name, content string) ent {
	return ent{"100755", name, c.put(plumbing.BlobObject, []byte(content))}
}
func (c *crafter) link(name, target string) ent {
	return ent{"120000", name, c.put(plumbing.BlobObject, []byte(target))}
}
func (c *crafter) dir(name string, entries ...ent) ent {
	return ent{"40000", name, c.tree(entries...)}
}

// tree encodes entries in the order given, unchecked.
func (c *crafter) tree(entries ...ent) plumbing.Hash {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %s\x00", e.mode, e.name)
		b.Write(e.hash[:])
	}
	return c.put(plumbing.TreeObject, b.Bytes())
}

// push commits the root tree on branch and pushes it to the server with git push.
func (c *crafter) push(branch string, root plumbing.Hash) string {
	sig := object.Signature{Name: "mallory", Email: "m@example.invalid", When: time.Unix(1700000000, 0)}
	commit := &object.Commit{Author: sig, Committer: sig, Message: branch, TreeHash: root}
	o := c.st.NewEncodedObject()
	if err := commit.Encode(o); err != nil {
		c.t.Fatal(err)
	}
	h, err := c.st.SetEncodedObject(o)
	if err != nil {
		c.t.Fatal(err)
	}
	c.r.PushRef("refs/heads/"+branch, h.String())
	return h.String()
}

// box is a destination folder two levels below a sandbox: every path written in the
// sandbox but outside the destination is an escape.
type box struct {
	sandbox, dest string
	before        []string
}

func newBox(t testing.TB) *box {
	sb := t.TempDir()
	b := &box{sandbox: sb, dest: filepath.Join(sb, "a", "b", "dest")}
	if err := os.MkdirAll(b.dest, 0o755); err != nil {
		t.Fatal(err)
	}
	b.before = b.outside(t)
	return b
}

// outside lists every path of the sandbox not under the destination.
func (b *box) outside(t testing.TB) []string {
	var out []string
	filepath.WalkDir(b.sandbox, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if p == b.dest {
			return filepath.SkipDir
		}
		out = append(out, p)
		return nil
	})
	return out
}

func (b *box) nothingOutside(t testing.TB) {
	t.Helper()
	if after := b.outside(t); !slices.Equal(after, b.before) {
		t.Fatalf("written outside the destination:\nbefore %q\nafter  %q", b.before, after)
	}
}

// Crafted trees pushed through the real git server, fetched by a watcher and exported:
// each is refused with a *TreeError naming repository, commit and path, and nothing is
// written outside the destination.
func TestExportRefusesCraftedTrees(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "evil")
	r.Commit(map[string]string{"README": "hi\n"}, "init")
	c := newCrafter(t, r)
	escape := filepath.Join(os.TempDir(), "gilliam-escape-"+randHex())
	t.Cleanup(func() { os.RemoveAll(escape) })

	cases := []struct {
		name string
		root plumbing.Hash
		want string
	}{
		{"dotdot-slash", c.tree(c.file("../../x", "pwned")), "a slash in a name"},
		{"a-dotdot-dotdot", c.tree(c.file("a/../../x", "pwned")), "a slash in a name"},
		{"dotdot-entries", c.tree(c.dir("..", c.dir("..", c.file("x", "pwned")))), `the name ".."`},
		{"dot-entry", c.tree(c.dir(".", c.file("x", "pwned"))), `the name "."`},
		{"dotgit-config", c.tree(c.dir(".git", c.file("config", "[core]\n\tfsmonitor = touch /tmp/pwned\n"))), ".git"},
		{"DOTGIT-hooks", c.tree(c.dir(".GIT", c.dir("hooks", c.exe("x", "#!/bin/sh\ntouch /tmp/pwned\n")))), ".git"},
		{"dotgit-trailing-dot-space", c.tree(c.dir(".Git. ", c.file("config", "x"))), ".git"},
		{"dotgit-ntfs-short", c.tree(c.dir("GIT~1", c.file("config", "x"))), ".git"},
		{"dotgit-hfs-ignorable", c.tree(c.dir(".g\u200cit", c.file("config", "x"))), ".git"},
		{"dotgit-deep", c.tree(c.dir("src", c.dir(".git", c.file("HEAD", "x")))), ".git"},
		{"backslash", c.tree(c.file(`..\..\x`, "pwned")), "backslash"},
		{"newline", c.tree(c.file("a\nb", "x")), "control character"},
		{"escape-sequence", c.tree(c.file("\x1b[31mred", "x")), "control character"},
		{"link-absolute-then-dir", c.tree(c.link("x", escape), c.dir("x", c.file("pwned", "pwned"))), "absolute target"},
		{"link-up-then-dir", c.tree(c.link("x", "../.."), c.dir("x", c.file("pwned", "pwned"))), "leads out of the tree"},
		{"link-deep-up", c.tree(c.dir("d", c.link("x", "../../.."))), "leads out of the tree"},
		{"link-inside-then-dir", c.tree(c.dir("sub"), c.link("x", "sub"), c.dir("x", c.file("pwned", "pwned"))), "appears twice"},
		{"file-twice", c.tree(c.file("x", "1"), c.file("x", "2")), "appears twice"},
		{"link-through-link", c.tree(c.link("out", "sub/up/.."), c.dir("sub", c.link("up", ".."))), "does not resolve inside the tree"},
		{"link-through-link-then-write", c.tree(c.link("out", "sub/up/.."), c.dir("sub", c.link("up", "..")), c.dir("z", c.file("pwned", "x"))), "does not resolve inside the tree"},
		{"link-backslash", c.tree(c.link("x", `..\..`)), "backslash"},
		{"link-loop", c.tree(c.link("a", "b"), c.link("b", "a")), "does not resolve inside the tree"},
		{"out-of-order", c.tree(c.file("b", "1"), c.file("a", "2")), "out of order"},
	}
	commits := map[string]string{}
	for _, tc := range cases {
		commits[tc.name] = c.push("evil/"+tc.name, tc.root)
	}
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Branches: []string{"evil/*"}}, nil)
	poll(t, w) // fetched through the smart HTTP server, go-git's fetch included
	var lines []string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox(t)
			commit := w.Head("refs/heads/evil/" + tc.name)
			if commit != commits[tc.name] {
				t.Fatalf("cache has %s at %.12s, pushed %.12s", tc.name, commit, commits[tc.name])
			}
			err := w.Repo().Export(commit, ".", b.dest)
			var te *gitwatch.TreeError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("export: %v, want a *TreeError saying %q", err, tc.want)
			}
			if !gitwatch.Stalled(err) || errors.Is(err, gitwatch.ErrCacheUnreadable) {
				t.Fatalf("a bad tree is stalled, not a cache failure: %v", err)
			}
			if te.Commit != commit || te.Repo != r.URL || !strings.Contains(err.Error(), r.URL) || !strings.Contains(err.Error(), commit[:12]) {
				t.Fatalf("the error does not name repository and commit: %v", err)
			}
			b.nothingOutside(t)
			if _, err := os.Lstat(escape); err == nil {
				t.Fatalf("%s was created", escape)
			}
			lines = append(lines, fmt.Sprintf("%-28s %v", tc.name, err))
		})
	}
	// The same trees read as a gilliam.yml: refused or not found, never read.
	if _, err := w.Repo().ReadFile(commits["dotgit-config"], ".git/config"); err == nil {
		t.Error("ReadFile of .git/config in a crafted tree")
	}
	testenv.Report(t, "gitwatch-crafted-trees", "Export of crafted trees (all refused, nothing written outside):\n"+strings.Join(lines, "\n"))
}

// Files already in the destination (a reused folder, a race with another writer) are
// never written through: a link where a folder or a file is to go is refused.
func TestExportNeverWritesThroughLinks(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	commit := r.Commit(map[string]string{"x/pwned": "pwned\n", "f": "pwned\n"}, "plain")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL}, nil)
	poll(t, w)
	for _, planted := range []string{"x", "f"} {
		t.Run(planted, func(t *testing.T) {
			b := newBox(t)
			target := filepath.Join(b.sandbox, "target")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(target, planted), filepath.Join(b.dest, planted)); err != nil {
				t.Fatal(err)
			}
			if planted == "x" {
				os.Mkdir(filepath.Join(target, "x"), 0o755)
			}
			b.before = b.outside(t)
			err := w.Repo().Export(commit, ".", b.dest)
			if !errors.As(err, new(*gitwatch.TreeError)) || !strings.Contains(err.Error(), "already there") {
				t.Fatalf("export over a planted link: %v", err)
			}
			b.nothingOutside(t)
		})
	}
}

// What is legitimate still exports: links inside the tree are written as links, folders,
// executable bits, and a subfolder alone.
func TestExportWritesLinksInside(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "ok")
	r.Commit(map[string]string{"README": "hi\n"}, "init")
	c := newCrafter(t, r)
	commit := c.push("main", c.tree( // in git's order, as git writes trees
		c.file("gilliam.yml", "x: 1\n"),
		c.dir("svc",
			c.link("d", "sub"),
			c.link("dangling", "sub/nothing"),
			c.link("l", "sub/a"),
			c.exe("run.sh", "#!/bin/sh\n"),
			c.dir("sub", c.file("a", "A\n")),
			c.link("through-file", "run.sh/x"))))
	w := watch(t, gitwatch.RepoConfig{URL: r.URL}, nil)
	poll(t, w)
	dir := t.TempDir()
	if err := w.Repo().Export(commit, "svc", dir); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "l")); err != nil || l != "sub/a" {
		t.Fatalf("link l: %q %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d", "a")); err != nil || string(b) != "A\n" {
		t.Fatalf("through link d: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "run.sh")); err != nil || fi.Mode()&0o100 == 0 {
		t.Fatalf("run.sh: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "gilliam.yml")); err == nil {
		t.Fatal("the export of svc holds a file of the root")
	}
	// ReadFile reads files only: a link where a gilliam.yml is expected is refused.
	if _, err := w.Repo().ReadFile(commit, "svc/l"); !errors.As(err, new(*gitwatch.TreeError)) || !strings.Contains(err.Error(), "not a file") {
		t.Fatalf("ReadFile of a link: %v", err)
	}
	// A link out of the exported folder is out of the tree, even if it stays in the
	// repository: the build sees the folder alone.
	commit = c.push("main", c.tree(c.dir("shared", c.file("x", "1")), c.dir("svc", c.link("shared", "../shared"))))
	poll(t, w)
	if err := w.Repo().Export(commit, "svc", t.TempDir()); !errors.As(err, new(*gitwatch.TreeError)) {
		t.Fatalf("link out of the exported folder: %v", err)
	}
}

// The limits of checkout: files, bytes of one file, bytes of the whole; each a clear,
// stalled error naming the path.
func TestExportLimits(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "big")
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("d/f%02d", i)] = strings.Repeat("x", 100)
	}
	commit := r.Commit(files, "twenty files of 100 bytes")
	for _, tc := range []struct {
		limits gitwatch.CheckoutLimits
		want   string
	}{
		{gitwatch.CheckoutLimits{MaxFiles: 10}, "more than 10 files, links and folders (checkout.max_files)"},
		{gitwatch.CheckoutLimits{MaxFileBytes: 99}, "100 bytes, over the limit of 99 (checkout.max_file_bytes)"},
		{gitwatch.CheckoutLimits{MaxBytes: 1000}, "more than 1000 bytes (checkout.max_bytes)"},
	} {
		w := watch(t, gitwatch.RepoConfig{URL: r.URL, Checkout: tc.limits}, nil)
		poll(t, w)
		err := w.Repo().Export(commit, ".", t.TempDir())
		if !gitwatch.Stalled(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "d/f") {
			t.Errorf("limits %+v: %v, want %q", tc.limits, err, tc.want)
		}
		t.Log(err)
	}
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Checkout: gitwatch.CheckoutLimits{MaxFiles: 21, MaxBytes: 2000, MaxFileBytes: 100}}, nil)
	poll(t, w)
	if err := w.Repo().Export(commit, ".", t.TempDir()); err != nil {
		t.Fatalf("at the limits exactly: %v", err)
	}
}

// A 100 MiB gilliam.yml (a push of a few hundred KB: it compresses) is refused by
// ReadFile before a byte of it is read, exported by streaming, and refused by a fetch
// whose limit is below it before go-git reads it; the figures of memory go to the
// report. (A fetch that accepts it holds it once, in go-git's indexing: at most
// checkout.max_file_bytes.)
func TestHugeBlobMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes 100 MiB through git")
	}
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "huge")
	r.Commit(map[string]string{"README": "hi\n"}, "init")
	const size = 100 << 20
	blob := hashObject(t, r.Work, size)
	c := newCrafter(t, r)
	commit := c.push("main", c.tree(ent{"100644", "gilliam.yml", blob}, c.dir("svc", ent{"100644", "data.yml", blob}, c.file("small", "s"))))
	packed := dirSize(t, filepath.Join(r.Bare, "objects"))

	w := watch(t, gitwatch.RepoConfig{URL: r.URL}, nil)
	fetch := measure(func() { poll(t, w) })
	if w.Head("main") != commit {
		t.Fatalf("fetched %s, pushed %s", w.Head("main"), commit)
	}

	var err error
	read := measure(func() { _, err = w.Repo().ReadFile(commit, "gilliam.yml") })
	if !errors.As(err, new(*gitwatch.TreeError)) || !strings.Contains(err.Error(), "over the limit of 1048576") {
		t.Fatalf("ReadFile of a 100 MiB gilliam.yml: %v", err)
	}
	t.Log(err)

	dir := t.TempDir()
	export := measure(func() { err = w.Repo().Export(commit, "svc", dir) })
	if err != nil {
		t.Fatalf("export of a 100 MiB file under the limits: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data.yml")); err != nil || fi.Size() != size {
		t.Fatalf("exported: %v %v", fi, err)
	}
	// A cache whose limit is below the blob refuses the fetch itself, before go-git reads
	// the object whole; nothing of the pack stays in the cache.
	small := watch(t, gitwatch.RepoConfig{URL: r.URL, Checkout: gitwatch.CheckoutLimits{MaxFileBytes: 1 << 20}}, nil)
	refused := measure(func() { _, err = small.Poll(context.Background()) })
	if !gitwatch.Stalled(err) || !strings.Contains(err.Error(), "a blob of 104857600 bytes, over the limit of 1048576") {
		t.Fatalf("fetch of a pack holding an object over max_file_bytes: %v", err)
	}
	t.Log(err)
	if small.Head("main") != "" {
		t.Fatal("the refused fetch moved main")
	}
	if left, _ := filepath.Glob(filepath.Join(small.Repo().Dir(), "objects", "pack", "*")); len(left) != 0 {
		t.Fatalf("the refused fetch left %q", left)
	}
	if read.allocated > 4<<20 || export.allocated > 16<<20 || refused.allocated > 16<<20 {
		t.Errorf("reading, exporting or a refused fetch allocated %d, %d and %d bytes: a blob was read whole", read.allocated, export.allocated, refused.allocated)
	}
	testenv.Report(t, "gitwatch-huge-blob", fmt.Sprintf(`A 100 MiB gilliam.yml and the same blob as svc/data.yml (server objects after the push: %d KB)
phase                                   allocated   peak heap above baseline (sampled every ms)
fetch (Poll: listing, fetch, indexing)  %9s   %9s
ReadFile gilliam.yml (refused)          %9s   %9s
Export svc (100 MiB written, streamed)  %9s   %9s
fetch refused (max_file_bytes 1 MiB)    %9s   %9s`,
		packed>>10, mib(fetch.allocated), mib(fetch.peak), mib(read.allocated), mib(read.peak),
		mib(export.allocated), mib(export.peak), mib(refused.allocated), mib(refused.peak)))
}

type memFigures struct{ allocated, peak uint64 }

// measure runs f and returns the bytes it allocated and the highest live heap seen above
// the heap before it (sampled every millisecond from runtime/metrics; the same process
// serves git, so the server's share is in it).
func measure(f func()) memFigures {
	runtime.GC()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(samples)
	base, allocs := samples[0].Value.Uint64(), samples[1].Value.Uint64()
	var peak uint64
	var mu sync.Mutex
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			mu.Lock()
			peak = max(peak, s[0].Value.Uint64())
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	metrics.Read(samples)
	m := memFigures{allocated: samples[1].Value.Uint64() - allocs}
	if peak > base {
		m.peak = peak - base
	}
	return m
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// hashObject writes a blob of size bytes of compressible YAML into the repository at dir
// with git hash-object, streamed (the test never holds it).
func hashObject(t testing.TB, dir string, size int64) plumbing.Hash {
	t.Helper()
	cmd := exec.Command("git", "hash-object", "-w", "--stdin")
	cmd.Dir = dir
	line := []byte("key: a value that repeats to make a large but compressible file\n")
	pr, pw := io.Pipe()
	go func() {
		var n int64
		for n < size {
			chunk := line
			if rest := size - n; rest < int64(len(chunk)) {
				chunk = chunk[:rest]
			}
			k, err := pw.Write(chunk)
			if err != nil {
				break
			}
			n += int64(k)
		}
		pw.Close()
	}()
	cmd.Stdin = pr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git hash-object: %v", err)
	}
	return plumbing.NewHash(strings.TrimSpace(string(out)))
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func randHex() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// A read from a corrupt cache is retryable (ErrCacheUnreadable), not stalled, and the
// next poll re-clones the cache; then the same read succeeds.
func TestCorruptCacheReadIsRetryable(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	commit := r.Commit(map[string]string{"gilliam.yml": "x: 1\n", "svc/a": "a\n"}, "one")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL}, nil)
	poll(t, w)
	corrupt(t, w.Repo().Dir())
	for name, read := range map[string]func() error{
		"ReadFile": func() error { _, err := w.Repo().ReadFile(commit, "gilliam.yml"); return err },
		"Export":   func() error { return w.Repo().Export(commit, "svc", t.TempDir()) },
		"TreeHash": func() error { _, err := w.Repo().TreeHash(commit, "svc"); return err },
	} {
		err := read()
		if !errors.Is(err, gitwatch.ErrCacheUnreadable) || gitwatch.Stalled(err) {
			t.Errorf("%s from a corrupt cache: %v, want ErrCacheUnreadable and not stalled", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := w.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := w.Repo().ReadFile(commit, "gilliam.yml"); err != nil || string(b) != "x: 1\n" {
		t.Fatalf("after the re-clone: %q %v", b, err)
	}
}
