package gitwatch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// SourceHash is what decides whether a service's folder p needs a build at commit: the
// tree hash of p, leaving out the files that only configure the formation (exclude, the
// gilliam.yml files, slash-separated from the repository root). When none of them is
// under p it is p's git tree hash; otherwise a hash of p's entries without them, so
// editing only gilliam.yml (env, scale, checks) changes no service's source and builds
// nothing, whatever the service's path.
func (r *Repo) SourceHash(commit, p string, exclude []string) (string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, err := r.tree(commit)
	if err != nil {
		return "", err
	}
	e, err := entry(t, p)
	if err != nil {
		return "", fmt.Errorf("%s at %s: %w", p, short(commit), err)
	}
	if e.Mode != filemode.Dir {
		return "", fmt.Errorf("%s at %s is not a folder", p, short(commit))
	}
	base := strings.TrimPrefix(path.Clean(p), "/")
	var inside []string
	for _, x := range exclude {
		x = strings.TrimPrefix(path.Clean(x), "/")
		switch {
		case base == ".":
			inside = append(inside, x)
		case strings.HasPrefix(x, base+"/"):
			inside = append(inside, strings.TrimPrefix(x, base+"/"))
		}
	}
	if len(inside) == 0 {
		return e.Hash.String(), nil
	}
	sub, err := r.git.TreeObject(e.Hash)
	if err != nil {
		r.suspect.Store(true)
		return "", fmt.Errorf("%s at %s: %w", p, short(commit), err)
	}
	return r.hashWithout(sub, inside)
}

// hashWithout hashes a tree's entries (mode, name, hash, in git's order) leaving out the
// paths in exclude, relative to the tree; a folder that holds one is hashed the same way.
func (r *Repo) hashWithout(t *object.Tree, exclude []string) (string, error) {
	h := sha256.New()
	for _, ent := range t.Entries {
		if slices.Contains(exclude, ent.Name) {
			continue
		}
		hash := ent.Hash.String()
		var below []string
		for _, x := range exclude {
			if rest, ok := strings.CutPrefix(x, ent.Name+"/"); ok {
				below = append(below, rest)
			}
		}
		if ent.Mode == filemode.Dir && len(below) > 0 {
			sub, err := r.git.TreeObject(ent.Hash)
			if err != nil {
				r.suspect.Store(true)
				return "", fmt.Errorf("tree %s: %w", ent.Name, err)
			}
			if hash, err = r.hashWithout(sub, below); err != nil {
				return "", err
			}
		}
		fmt.Fprintf(h, "%o %s %s\n", uint32(ent.Mode), ent.Name, hash)
	}
	return hex.EncodeToString(h.Sum(nil))[:40], nil
}
