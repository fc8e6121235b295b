package gitwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Repo is one remote repository followed through a bare cache on disk. Fetches into the
// cache are incremental; reads (files, tree hashes, exports) come from the cache.
type Repo struct {
	// URL is the remote, as configured (it may hold credentials: log Sanitized instead).
	URL  string
	dir  string
	auth transport.AuthMethod
	git  *git.Repository
}

// Open opens the cache of url under dir, creating it when absent.
func Open(rawURL, dir string, auth transport.AuthMethod) (*Repo, error) {
	r, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create cache of %s: %w", Sanitize(rawURL), err)
		}
		r, err = git.PlainInit(dir, true)
		if err == nil {
			_, err = r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{rawURL}})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open cache of %s at %s: %w", Sanitize(rawURL), dir, err)
	}
	return &Repo{URL: rawURL, dir: dir, auth: auth, git: r}, nil
}

// ListRefs lists the remote's refs and the commits they point at, like git ls-remote: one
// small request, no objects transferred.
func (r *Repo) ListRefs(ctx context.Context) (map[string]string, error) {
	remote, err := r.git.Remote("origin")
	if err != nil {
		return nil, err
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: r.auth})
	if err != nil {
		return nil, fmt.Errorf("list refs of %s: %w", Sanitize(r.URL), err)
	}
	out := make(map[string]string, len(refs))
	for _, ref := range refs {
		if ref.Type() == plumbing.HashReference {
			out[ref.Name().String()] = ref.Hash().String()
		}
	}
	return out, nil
}

// Fetch brings refs (full names, refs/heads/main) and their history into the cache, forced,
// so a force-pushed ref follows the remote.
func (r *Repo) Fetch(ctx context.Context, refs ...string) error {
	specs := make([]gitconfig.RefSpec, len(refs))
	for i, ref := range refs {
		specs[i] = gitconfig.RefSpec("+" + ref + ":" + ref)
	}
	err := r.git.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: specs, Auth: r.auth, Force: true, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s from %s: %w", strings.Join(refs, ", "), Sanitize(r.URL), err)
	}
	return nil
}

// Resolve returns the commit a ref points at in the cache, "" when the cache lacks it.
func (r *Repo) Resolve(ref string) (string, error) {
	h, err := r.git.Reference(plumbing.ReferenceName(ref), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return h.Hash().String(), nil
}

func (r *Repo) tree(commit string) (*object.Tree, error) {
	c, err := r.git.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("commit %s of %s: %w", commit, Sanitize(r.URL), err)
	}
	return c.Tree()
}

// ErrNotFound is returned for a path absent at a commit.
var ErrNotFound = errors.New("not found")

// ReadFile returns the content of the file at p (slash-separated, from the root) at commit.
func (r *Repo) ReadFile(commit, p string) ([]byte, error) {
	t, err := r.tree(commit)
	if err != nil {
		return nil, err
	}
	f, err := t.File(path.Clean(p))
	if errors.Is(err, object.ErrFileNotFound) {
		return nil, fmt.Errorf("%s at %s: %w", p, short(commit), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", p, short(commit), err)
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(rd)
}

// TreeHash is the git tree hash of the folder p at commit ("." is the root): it changes
// exactly when a file under p changes, so it tells whether a service must be rebuilt.
func (r *Repo) TreeHash(commit, p string) (string, error) {
	t, err := r.tree(commit)
	if err != nil {
		return "", err
	}
	p = path.Clean(p)
	if p == "." {
		return t.Hash.String(), nil
	}
	e, err := t.FindEntry(p)
	if err != nil {
		return "", fmt.Errorf("%s at %s: %w", p, short(commit), ErrNotFound)
	}
	if e.Mode != filemode.Dir {
		return "", fmt.Errorf("%s at %s is not a folder", p, short(commit))
	}
	return e.Hash.String(), nil
}

// Export writes the files under folder p at commit into dir, with their executable bits and
// symlinks, as a build's source.
func (r *Repo) Export(commit, p, dir string) error {
	t, err := r.tree(commit)
	if err != nil {
		return err
	}
	if p = path.Clean(p); p != "." {
		if t, err = t.Tree(p); err != nil {
			return fmt.Errorf("%s at %s: %w", p, short(commit), ErrNotFound)
		}
	}
	return t.Files().ForEach(func(f *object.File) error {
		target := filepath.Join(dir, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		content, err := f.Contents()
		if err != nil {
			return err
		}
		switch f.Mode {
		case filemode.Symlink:
			return os.Symlink(content, target)
		case filemode.Executable:
			return os.WriteFile(target, []byte(content), 0o755)
		default:
			return os.WriteFile(target, []byte(content), 0o644)
		}
	})
}

// Sanitize removes credentials from a repository URL, for logs and errors.
func Sanitize(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	u.User = nil
	return u.String()
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
