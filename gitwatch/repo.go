package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/schema"
)

// Repo is one remote repository followed through a bare cache on disk. Fetches into the
// cache are incremental; reads (files, tree hashes, exports) come from the cache. A Repo
// is safe for concurrent use: reads share the cache, a fetch or a re-clone has it alone.
type Repo struct {
	// URL is the remote, as configured (it may hold credentials: log Sanitize(URL)).
	URL         string
	dir         string
	credentials credentials
	// remote lists and fetches with the URL above, whatever the cache's own config says.
	remote *git.Remote

	// limits bound what Export writes.
	limits CheckoutLimits

	mu  sync.RWMutex
	git *git.Repository
	// suspect is set when a read failed in a way a healthy cache would not: the next poll
	// checks the cache and re-clones it if it is corrupt.
	suspect atomic.Bool
}

// Open opens the cache of url under dir (which belongs to the cache), creating it when
// absent and starting it again when it does not open (a corrupt cache). auth may be nil.
func Open(rawURL, dir string, auth transport.AuthMethod) (*Repo, error) {
	return open(rawURL, dir, func() (transport.AuthMethod, error) { return auth, nil })
}

func open(rawURL, dir string, creds credentials) (*Repo, error) {
	installTransport()
	r := &Repo{URL: rawURL, dir: dir, credentials: creds, limits: CheckoutLimits{}.withDefaults(),
		remote: git.NewRemote(nil, &gitconfig.RemoteConfig{Name: "origin", URLs: []string{rawURL}})}
	g, err := openCache(dir)
	switch {
	case err == nil:
		r.git = g
		return r, nil
	case errors.Is(err, git.ErrRepositoryNotExists) && isEmptyDir(dir):
		return r, r.create()
	default:
		// Something is there and it is not a repository we can read: a cache is only a
		// copy, so start it again rather than ask a person.
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("remove corrupt cache of %s at %s: %w", Sanitize(rawURL), dir, err)
		}
		return r, r.create()
	}
}

// streamAbove is the size above which the cache streams an object from disk instead of
// reading it whole into memory (go-git reads every object whole by default): a blob over
// it costs a few buffers to read, whatever its size.
const streamAbove = 1 << 20

// minFetchLimit is the smallest object size limit a fetch applies.
const minFetchLimit = 1 << 20

// openCache opens the bare cache in dir with the storage options Open and Init use.
func openCache(dir string) (*git.Repository, error) {
	return git.Open(cacheStorage(dir), nil)
}

func cacheStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRUDefault(),
		filesystem.Options{LargeObjectThreshold: streamAbove})
}

func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0)
}

// create initialises an empty bare cache in r.dir. Callers hold r.mu or own r.
func (r *Repo) create() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("create cache of %s: %w", Sanitize(r.URL), err)
	}
	g, err := git.Init(cacheStorage(r.dir), nil)
	if err == nil {
		_, err = g.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{r.URL}})
	}
	if err != nil {
		return fmt.Errorf("create cache of %s at %s: %w", Sanitize(r.URL), r.dir, err)
	}
	r.git = g
	return nil
}

// Dir is the cache's folder.
func (r *Repo) Dir() string { return r.dir }

// ListRefs lists the remote's refs and the commits they point at, like git ls-remote: one
// small request, no objects transferred, and the cache is not touched. Annotated tags are
// peeled to their commit.
func (r *Repo) ListRefs(ctx context.Context) (map[string]string, error) {
	auth, err := r.credentials()
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", Sanitize(r.URL), err)
	}
	refs, err := r.remote.ListContext(ctx, &git.ListOptions{Auth: auth, PeelingOption: git.AppendPeeled})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return map[string]string{}, nil // a definite answer: no refs at all
	}
	if err != nil {
		return nil, scrub(fmt.Errorf("list refs of %s: %w", Sanitize(r.URL), classify(err)), r.URL)
	}
	out := make(map[string]string, len(refs))
	var peeled []*plumbing.Reference
	for _, ref := range refs {
		switch {
		case ref.Type() != plumbing.HashReference:
		case strings.HasSuffix(ref.Name().String(), "^{}"):
			peeled = append(peeled, ref)
		default:
			out[ref.Name().String()] = ref.Hash().String()
		}
	}
	for _, ref := range peeled {
		out[strings.TrimSuffix(ref.Name().String(), "^{}")] = ref.Hash().String()
	}
	return out, nil
}

// Fetch brings refs (full names, refs/heads/main) and their history into the cache, forced,
// so a force-pushed ref follows the remote.
func (r *Repo) Fetch(ctx context.Context, refs ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetch(ctx, refs)
}

func (r *Repo) fetch(ctx context.Context, refs []string) error {
	if len(refs) == 0 {
		return nil
	}
	auth, err := r.credentials()
	if err != nil {
		return fmt.Errorf("fetch from %s: %w", Sanitize(r.URL), err)
	}
	specs := make([]gitconfig.RefSpec, len(refs))
	for i, ref := range refs {
		specs[i] = gitconfig.RefSpec("+" + ref + ":" + ref)
	}
	// The remote is built on the cache's storage each time: the storage changes on re-clone.
	// The pack goes through guardedStorage, which refuses objects over the size limit
	// before go-git reads them whole (a limit set below 1 MiB applies to checkouts only:
	// commits and trees of a real repository may be larger than a file limit that small).
	st := r.git.Storer
	if fs, ok := st.(*filesystem.Storage); ok {
		st = guardedStorage{Storage: fs, limit: max(r.limits.MaxFileBytes, minFetchLimit)}
	}
	remote := git.NewRemote(st, r.remote.Config())
	err = remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: specs, Auth: auth, Force: true, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		cleanTempPacks(r.dir)
		return scrub(fmt.Errorf("fetch %s from %s: %w", strings.Join(refs, ", "), Sanitize(r.URL), classify(err)), r.URL)
	}
	return nil
}

// verify checks the cache as it is on disk, through a fresh handle (an open one may serve
// objects from memory that the disk lost): the commit and root tree of every ref, and
// every folder of the refs deep reports true for (the deployed ones, which builds read).
// It costs no network. On success the fresh handle replaces the old one. Callers hold
// r.mu.
func (r *Repo) verify(deep func(ref string) bool) error {
	g, err := openCache(r.dir)
	if err != nil {
		return err
	}
	refs, err := g.References()
	if err != nil {
		return err
	}
	fresh := &Repo{git: g}
	err = refs.ForEach(func(ref *plumbing.Reference) error {
		if ref.Type() != plumbing.HashReference {
			return nil
		}
		c, err := fresh.peel(ref.Hash())
		if err != nil {
			return fmt.Errorf("%s: %w", ref.Name(), err)
		}
		t, err := c.Tree()
		if err != nil || !deep(ref.Name().String()) {
			return err
		}
		walker := object.NewTreeWalker(t, true, nil)
		defer walker.Close()
		for {
			_, _, err := walker.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", ref.Name(), err)
			}
		}
	})
	if err != nil {
		return err
	}
	r.git = g
	return nil
}

// reclone throws the cache away and fetches refs into a new one. Callers hold r.mu.
func (r *Repo) reclone(ctx context.Context, refs []string) error {
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("remove corrupt cache of %s: %w", Sanitize(r.URL), err)
	}
	if err := r.create(); err != nil {
		return err
	}
	return r.fetch(ctx, refs)
}

// deleteRef forgets a ref the remote deleted, so that a restart does not report it again.
func (r *Repo) deleteRef(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.git.Storer.RemoveReference(plumbing.ReferenceName(ref))
}

// Resolve returns the commit a ref points at in the cache (an annotated tag is peeled to
// its commit), "" when the cache lacks the ref.
func (r *Repo) Resolve(ref string) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.resolve(ref)
}

func (r *Repo) resolve(ref string) (string, error) {
	h, err := r.git.Reference(plumbing.ReferenceName(ref), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	c, err := r.peel(h.Hash())
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	return c.Hash.String(), nil
}

// peel returns the commit h names, directly or through annotated tags.
func (r *Repo) peel(h plumbing.Hash) (*object.Commit, error) {
	for range 10 { // tags of tags, bounded
		o, err := r.git.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, err
		}
		switch o := o.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("%s is a %s, not a commit", h, o.Type())
		}
	}
	return nil, fmt.Errorf("%s: too many nested tags", h)
}

// isAncestor reports whether old is an ancestor of (or equal to) new in the cache. An old
// commit the cache lacks is not an ancestor: the cache holds the history of every ref it
// fetched, so a missing old commit was rewritten away.
func (r *Repo) isAncestor(old, new string) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n, err := r.git.CommitObject(plumbing.NewHash(new))
	if err != nil {
		return false, fmt.Errorf("commit %s of %s: %w", short(new), Sanitize(r.URL), err)
	}
	o, err := r.git.CommitObject(plumbing.NewHash(old))
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("commit %s of %s: %w", short(old), Sanitize(r.URL), err)
	}
	return o.IsAncestor(n)
}

// tree is the root tree of commit. Callers hold r.mu for reading. A failure marks the
// cache suspect, for the next poll to check, and wraps ErrCacheUnreadable.
func (r *Repo) tree(commit string) (*object.Tree, error) {
	c, err := r.git.CommitObject(plumbing.NewHash(commit))
	if err == nil {
		var t *object.Tree
		if t, err = c.Tree(); err == nil {
			return t, nil
		}
	}
	return nil, r.unreadable(fmt.Sprintf("commit %s of %s", short(commit), Sanitize(r.URL)), err)
}

// CommitTime is when commit was made (its committer date).
func (r *Repo) CommitTime(commit string) (time.Time, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, err := r.git.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return time.Time{}, fmt.Errorf("commit %s of %s: %w", short(commit), Sanitize(r.URL), err)
	}
	return c.Committer.When, nil
}

// ErrNotFound is returned for a path absent at a commit: stalled (internal/fault), since
// reading the same commit again finds nothing either.
var ErrNotFound = fault.Stall(errors.New("not found"))

// ReadFileLimit is the largest file ReadFile returns: a gilliam.yml, whose own limit
// (schema.MaxFileSize) it is.
const ReadFileLimit = schema.MaxFileSize

// ReadFile returns the content of the file at p (slash-separated, from the root) at commit.
// A file over ReadFileLimit, or p naming a link or a folder, is a *TreeError (stalled:
// the commit must change); the size is checked before any byte is read, and the read
// itself is capped, so a huge blob costs nothing.
func (r *Repo) ReadFile(commit, p string) ([]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, err := r.tree(commit)
	if err != nil {
		return nil, err
	}
	refuse := func(format string, args ...any) error {
		return &TreeError{Repo: Sanitize(r.URL), Commit: commit, Path: p, Reason: fmt.Sprintf(format, args...)}
	}
	for _, name := range strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/") {
		if err := checkName(name); err != nil {
			return nil, refuse("%v", err)
		}
	}
	where := fmt.Sprintf("%s at %s of %s", quotePath(p), short(commit), Sanitize(r.URL))
	e, err := entry(t, p)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%s at %s: %w", p, short(commit), ErrNotFound)
	case errors.Is(err, object.ErrMalformedTree):
		return nil, refuse("malformed tree: %v", err)
	case err != nil:
		return nil, r.unreadable(where, err)
	case !e.Mode.IsFile() || e.Mode == filemode.Symlink:
		return nil, refuse("not a file (mode %s)", e.Mode)
	}
	blob, err := r.git.BlobObject(e.Hash)
	if err != nil {
		return nil, r.unreadable(where, err)
	}
	if blob.Size > ReadFileLimit {
		return nil, refuse("%d bytes, over the limit of %d", blob.Size, ReadFileLimit)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, r.unreadable(where, err)
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, ReadFileLimit+1))
	if err != nil {
		return nil, r.unreadable(where, err)
	}
	if int64(len(b)) != blob.Size {
		return nil, r.unreadable(where,
			fmt.Errorf("blob %s holds %d bytes, its header says %d", e.Hash, len(b), blob.Size))
	}
	return b, nil
}

// TreeHash is the git tree hash of the folder p at commit ("." is the root): it changes
// exactly when a file under p changes, so it tells whether a service must be rebuilt.
func (r *Repo) TreeHash(commit, p string) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, err := r.tree(commit)
	if err != nil {
		return "", err
	}
	e, err := entry(t, p)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%s at %s: %w", p, short(commit), err)
	}
	if err != nil {
		return "", r.unreadable(fmt.Sprintf("%s at %s of %s", quotePath(p), short(commit), Sanitize(r.URL)), err)
	}
	if e.Mode != filemode.Dir {
		return "", fmt.Errorf("%s at %s is not a folder", p, short(commit))
	}
	return e.Hash.String(), nil
}

// entry finds p in the root tree t; the root itself is a folder entry.
func entry(t *object.Tree, p string) (*object.TreeEntry, error) {
	if p = path.Clean(p); p == "." || p == "/" {
		return &object.TreeEntry{Name: ".", Mode: filemode.Dir, Hash: t.Hash}, nil
	}
	e, err := t.FindEntry(strings.TrimPrefix(p, "/"))
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, ErrNotFound
	}
	return e, err
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
