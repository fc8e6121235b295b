package gitwatch

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// CheckoutLimits bound what Export writes, so that a commit cannot fill the disk, use up
// its inodes or take the reader's memory (`checkout:` of a watch-list entry). Zero means
// the default.
type CheckoutLimits struct {
	// MaxFiles is the most entries (files, links and folders) one export writes.
	// Default 100000.
	MaxFiles int `yaml:"max_files,omitempty"`
	// MaxBytes is the most bytes of file content one export writes. Default 1 GiB.
	MaxBytes int64 `yaml:"max_bytes,omitempty"`
	// MaxFileBytes is the largest single file, and the largest object a fetch accepts
	// (go-git holds each fetched object whole in memory once: this bounds that too; for
	// the fetch, never below 1 MiB). Default 100 MiB, GitHub's own limit on a file.
	MaxFileBytes int64 `yaml:"max_file_bytes,omitempty"`
}

// Defaults of CheckoutLimits.
const (
	DefaultMaxFiles     = 100_000
	DefaultMaxBytes     = 1 << 30
	DefaultMaxFileBytes = 100 << 20
)

func (l CheckoutLimits) withDefaults() CheckoutLimits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	return l
}

// maxLinkTarget is the longest link target written (Linux's PATH_MAX).
const maxLinkTarget = 4096

// Export writes the files under folder p at commit into dir (an empty folder), with their
// executable bits and links, as a build's source. It treats the tree as hostile:
//
//   - every entry name is checked (checkName): no "..", ".", empty name, slash,
//     backslash, control character, or ".git" in any case or spelling a filesystem
//     would fold to it; a name twice in one folder is refused;
//   - files and folders are created relative to dir through an os.Root, which refuses any
//     path that would resolve outside dir; files are created O_EXCL and every folder on
//     the way is checked to be a real folder, so nothing is ever written through a link;
//   - a link whose target is absolute, or leaves dir lexically, is refused; once all is
//     written, every link is resolved inside dir and one that leads out (through other
//     links) is refused; links that stay inside are written as links;
//   - blob sizes are checked against CheckoutLimits before any byte is read, and blobs
//     are streamed to disk (a few buffers of memory, whatever their size);
//   - the export stops at CheckoutLimits.MaxFiles entries and MaxBytes bytes.
//
// A refusal is a *TreeError naming the repository, commit and path (stalled: the commit
// must change). A read the cache fails wraps ErrCacheUnreadable (retry after the next
// poll). After an error dir holds a partial export: remove it.
func (r *Repo) Export(commit, p, dir string) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, err := r.tree(commit)
	if err != nil {
		return err
	}
	x := &exporter{r: r, commit: commit, limits: r.limits}
	if p = path.Clean(p); p != "." {
		for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			if err := checkName(name); err != nil {
				return x.refuse(p, "%v", err)
			}
		}
		e, err := entry(t, p)
		switch {
		case errors.Is(err, ErrNotFound):
			return fmt.Errorf("%s at %s: %w", p, short(commit), ErrNotFound)
		case err != nil:
			return x.treeErr(p, err)
		case e.Mode != filemode.Dir:
			return x.refuse(p, "not a folder (mode %s)", e.Mode)
		}
		if t, err = r.git.TreeObject(e.Hash); err != nil {
			return x.treeErr(p, err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("export %s at %s: %w", p, short(commit), err)
	}
	defer root.Close()
	x.root, x.base = root, p
	if err := x.tree(t, ""); err != nil {
		return err
	}
	return x.checkLinks()
}

type exporter struct {
	r      *Repo
	commit string
	limits CheckoutLimits
	root   *os.Root
	base   string // the folder exported, for error texts

	entries int
	bytes   int64
	links   []string
}

// refuse is a *TreeError about rel (a path inside the export).
func (x *exporter) refuse(rel, format string, args ...any) error {
	return &TreeError{Repo: Sanitize(x.r.URL), Commit: x.commit, Path: x.full(rel), Reason: fmt.Sprintf(format, args...)}
}

func (x *exporter) full(rel string) string {
	if x.base == "" || x.base == "." {
		return rel
	}
	if rel == "" {
		return x.base
	}
	return x.base + "/" + rel
}

// treeErr classifies a failure to read an object: a malformed tree is the commit's fault
// (stalled), anything else the cache's (retryable).
func (x *exporter) treeErr(rel string, err error) error {
	if errors.Is(err, object.ErrMalformedTree) {
		return x.refuse(rel, "malformed tree: %v", err)
	}
	return x.r.unreadable(fmt.Sprintf("%s at %s of %s", quotePath(x.full(rel)), short(x.commit), Sanitize(x.r.URL)), err)
}

// tree writes the entries of t into the folder rel ("" for dir itself).
func (x *exporter) tree(t *object.Tree, rel string) error {
	seen := make(map[string]bool, len(t.Entries))
	prev := ""
	for i, e := range t.Entries {
		p := join(rel, e.Name)
		if err := checkName(e.Name); err != nil {
			return x.refuse(p, "%v", err)
		}
		if seen[e.Name] {
			return x.refuse(p, "the name appears twice in its folder")
		}
		seen[e.Name] = true
		// git writes entries in order; go-git's lookups (ReadFile, TreeHash) rely on it, so
		// a tree out of order (crafted) would show a build files they do not see.
		sn := sortName(e)
		if i > 0 && sn <= prev {
			return x.refuse(p, "tree entries out of order (git never writes such a tree)")
		}
		prev = sn
		if e.Mode == filemode.Submodule {
			continue // a submodule's commit is not in this repository: skipped, as before
		}
		if x.entries++; x.entries > x.limits.MaxFiles {
			return x.refuse(p, "more than %d files, links and folders (checkout.max_files)", x.limits.MaxFiles)
		}
		switch e.Mode {
		case filemode.Dir:
			if err := x.mkdir(p); err != nil {
				return err
			}
			sub, err := x.r.git.TreeObject(e.Hash)
			if err != nil {
				return x.treeErr(p, err)
			}
			if err := x.tree(sub, p); err != nil {
				return err
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			if err := x.file(p, e); err != nil {
				return err
			}
		case filemode.Symlink:
			if err := x.link(p, e); err != nil {
				return err
			}
		default:
			return x.refuse(p, "unsupported mode %s", e.Mode)
		}
	}
	return nil
}

// sortName is what git orders tree entries by: the name, with a slash after a folder's.
func sortName(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// mkdir creates the folder p; one already there must be a real folder, never a link.
func (x *exporter) mkdir(p string) error {
	err := x.root.Mkdir(p, 0o755)
	if errors.Is(err, fs.ErrExist) {
		fi, lerr := x.root.Lstat(p)
		switch {
		case lerr != nil:
			err = lerr
		case fi.Mode()&fs.ModeSymlink != 0:
			return x.refuse(p, "a link is already there: refusing to write through it")
		case !fi.IsDir():
			return x.refuse(p, "a file is already there")
		default:
			return nil
		}
	}
	if err != nil {
		return x.writeErr(p, err)
	}
	return nil
}

// writeErr is a failure to write into the destination. One os.Root refused because the
// path would leave dir is the tree's doing; others (a full disk) are the machine's.
func (x *exporter) writeErr(p string, err error) error {
	if strings.Contains(err.Error(), "path escapes from parent") {
		return x.refuse(p, "the path leads out of the destination: %v", err)
	}
	return fmt.Errorf("export %s at %s of %s: %w", quotePath(x.full(p)), short(x.commit), Sanitize(x.r.URL), err)
}

// blob opens the blob of e after checking its size against limit, before reading a byte.
func (x *exporter) blob(p string, e object.TreeEntry, limit int64, what string) (*object.Blob, error) {
	b, err := x.r.git.BlobObject(e.Hash)
	if err != nil {
		return nil, x.treeErr(p, err)
	}
	if b.Size > limit {
		return nil, x.refuse(p, "%d bytes, over the limit of %d (%s)", b.Size, limit, what)
	}
	return b, nil
}

// file streams the blob of e into a new file p.
func (x *exporter) file(p string, e object.TreeEntry) error {
	b, err := x.blob(p, e, x.limits.MaxFileBytes, "checkout.max_file_bytes")
	if err != nil {
		return err
	}
	if x.bytes+b.Size > x.limits.MaxBytes {
		return x.refuse(p, "the checkout would hold more than %d bytes (checkout.max_bytes)", x.limits.MaxBytes)
	}
	mode := os.FileMode(0o644)
	if e.Mode == filemode.Executable {
		mode = 0o755
	}
	// O_EXCL: a name already there, a link included (dangling or not), is never opened.
	f, err := x.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return x.refuse(p, "something is already there: refusing to overwrite it or write through it")
	}
	if err != nil {
		return x.writeErr(p, err)
	}
	rd, err := b.Reader()
	if err != nil {
		f.Close()
		return x.treeErr(p, err)
	}
	src := &readErr{r: io.LimitReader(rd, b.Size+1)}
	n, err := io.Copy(f, src)
	rd.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case src.err != nil:
		return x.treeErr(p, src.err)
	case err != nil:
		return x.writeErr(p, err)
	case n != b.Size:
		return x.treeErr(p, fmt.Errorf("blob %s holds %d bytes, its header says %d", e.Hash, n, b.Size))
	}
	x.bytes += n
	return nil
}

// readErr remembers the error of its reader, to tell a failed read from a failed write.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// link writes the link p, whose target must stay inside the export.
func (x *exporter) link(p string, e object.TreeEntry) error {
	b, err := x.blob(p, e, maxLinkTarget, "a link target")
	if err != nil {
		return err
	}
	rd, err := b.Reader()
	if err != nil {
		return x.treeErr(p, err)
	}
	raw, err := io.ReadAll(io.LimitReader(rd, maxLinkTarget+1))
	rd.Close()
	if err != nil {
		return x.treeErr(p, err)
	}
	target := string(raw)
	if err := checkLinkTarget(p, target); err != nil {
		return x.refuse(p, "link to %s: %v", quotePath(target), err)
	}
	err = x.root.Symlink(target, p)
	if errors.Is(err, fs.ErrExist) {
		return x.refuse(p, "something is already there: refusing to replace it with a link")
	}
	if err != nil {
		return x.writeErr(p, err)
	}
	x.links = append(x.links, p)
	return nil
}

// checkLinkTarget refuses a target that is empty, absolute, holds a control character or
// a backslash, or leaves the export when read as a path from the link's folder.
func checkLinkTarget(p, target string) error {
	switch {
	case target == "":
		return errors.New("empty target")
	case strings.HasPrefix(target, "/"):
		return errors.New("an absolute target leads out of the tree")
	case strings.ContainsFunc(target, isControl):
		return errors.New("control character in the target")
	case strings.Contains(target, `\`):
		return errors.New("backslash in the target")
	}
	if to := path.Join(path.Dir(p), target); to == ".." || strings.HasPrefix(to, "../") {
		return errors.New("the target leads out of the tree")
	}
	return nil
}

// checkLinks resolves every link written, inside the export: one that leads out through
// other links (sub/up -> .., then out -> sub/up/..) is refused, and so is a loop of links.
// A link to nothing inside the tree (dangling, or through a file) is allowed, as git
// allows it.
func (x *exporter) checkLinks() error {
	for _, p := range x.links {
		_, err := x.root.Stat(p)
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		return x.refuse(p, "the link does not resolve inside the tree: %v", err)
	}
	return nil
}

// checkName refuses a tree entry name that could write anywhere but where it says: what
// git's own checkout refuses (verify_path, with core.protectNTFS and core.protectHFS)
// and more.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case name == "." || name == "..":
		return fmt.Errorf("the name %q", name)
	case strings.Contains(name, "/"):
		return errors.New("a slash in a name")
	case strings.Contains(name, `\`):
		return errors.New("a backslash in a name")
	case strings.ContainsFunc(name, isControl):
		return errors.New("a control character in a name")
	case isDotGit(name):
		return errors.New("a .git folder or file (in some spelling) in the tree")
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// isDotGit reports whether a filesystem could take name for ".git": any case, trailing
// dots and spaces (NTFS drops them), the NTFS short name GIT~1, and the code points HFS+
// ignores.
func isDotGit(name string) bool {
	n := strings.Map(func(r rune) rune {
		if hfsIgnored(r) {
			return -1
		}
		return r
	}, name)
	n = strings.ToLower(strings.TrimRight(n, ". "))
	return n == ".git" || n == "git~1"
}

// hfsIgnored are the code points HFS+ leaves out when it compares names (git's
// is_hfs_dotgit list).
func hfsIgnored(r rune) bool {
	switch {
	case r >= 0x200c && r <= 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x206a && r <= 0x206f, r == 0xfeff:
		return true
	}
	return false
}
