package gitwatch

import (
	"errors"
	"fmt"
	"sort"

	"github.com/go-git/go-git/v5/plumbing/object"
)

// Changed reports which services changed between two commits. paths maps a service's name
// to its folder in the repository ("." for the root); a service changed when the git hash
// of its folder differs, which happens exactly when a file under it changed, so a commit
// that touches only gilliam.yml or another service's folder leaves it unchanged. A folder
// that appears or disappears is a change; one absent at both commits is not. from ""
// (nothing deployed yet) reports every service. Names come back sorted.
func (r *Repo) Changed(from, to string, paths map[string]string) ([]string, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	newTree, err := r.tree(to)
	if err != nil {
		return nil, err
	}
	var changed []string
	if from == "" {
		for name := range paths {
			changed = append(changed, name)
		}
		sort.Strings(changed)
		return changed, nil
	}
	oldTree, err := r.tree(from)
	if err != nil {
		return nil, err
	}
	for name, p := range paths {
		before, err := entryHash(oldTree, p)
		if err != nil {
			return nil, r.unreadable(fmt.Sprintf("service %s: %s at %s of %s", name, p, short(from), Sanitize(r.URL)), err)
		}
		after, err := entryHash(newTree, p)
		if err != nil {
			return nil, r.unreadable(fmt.Sprintf("service %s: %s at %s of %s", name, p, short(to), Sanitize(r.URL)), err)
		}
		if before != after {
			changed = append(changed, name)
		}
	}
	sort.Strings(changed)
	return changed, nil
}

// entryHash is the hash of the folder or file at p, "" when p is absent.
func entryHash(t *object.Tree, p string) (string, error) {
	e, err := entry(t, p)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return e.Hash.String(), nil
}
