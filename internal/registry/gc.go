package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// GCPath is where the registry collects its garbage on POST (see CollectGarbage), with
// optional query parameters grace (a duration, default one hour) and dry_run (true). It
// answers a GCResult in JSON. Deleting manifests through the registry API leaves their
// blobs on disk: this frees them.
const GCPath = "/_gilliam/gc"

// GCResult is what CollectGarbage freed (or, dry, would free).
type GCResult struct {
	Blobs  int   `json:"blobs"`
	Bytes  int64 `json:"bytes"`
	DryRun bool  `json:"dry_run,omitempty"`
}

// blobPath matches /v2/<repo>/blobs/<digest>, a blob read or checked.
var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// CollectGarbage removes the blobs that no manifest references and that nobody wrote,
// read or checked within grace. The grace is what keeps a push in progress whole: a client
// uploads (or checks the presence of) every blob before it puts the manifest naming them,
// and both refresh the blob's time. Manifests cannot change while it runs.
func (r *Registry) CollectGarbage(grace time.Duration, dryRun bool) (GCResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := GCResult{DryRun: dryRun}
	used, err := r.referencedBlobs()
	if err != nil {
		return res, err
	}
	root := filepath.Join(r.blobs, "sha256")
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("registry: gc: %w", err)
	}
	var errs []error
	for _, e := range entries {
		digest := "sha256:" + e.Name()
		if used[digest] || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < grace {
			continue
		}
		if !dryRun {
			if err := os.Remove(filepath.Join(root, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
				continue
			}
		}
		res.Blobs++
		res.Bytes += info.Size()
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("registry: gc: %w", errors.Join(errs...))
	}
	return res, nil
}

// referencedBlobs are the digests every journaled manifest names: an image's config and
// layers, an index's manifests, an artifact's blobs and subject. r.mu is held.
func (r *Registry) referencedBlobs() (map[string]bool, error) {
	type descriptor struct {
		Digest string `json:"digest"`
	}
	used := map[string]bool{}
	err := filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var j journaled
		if err := json.Unmarshal(b, &j); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var m struct {
			Config    *descriptor  `json:"config"`
			Subject   *descriptor  `json:"subject"`
			Layers    []descriptor `json:"layers"`
			Blobs     []descriptor `json:"blobs"`
			Manifests []descriptor `json:"manifests"`
		}
		if err := json.Unmarshal(j.Manifest, &m); err != nil {
			// Not JSON we know: keep everything rather than guess.
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, d := range append(append(append(m.Layers, m.Blobs...), m.Manifests...), ptrs(m.Config, m.Subject)...) {
			used[d.Digest] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: gc: read manifests: %w", err)
	}
	return used, nil
}

func ptrs[T any](ps ...*T) []T {
	var out []T
	for _, p := range ps {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// touchBlob refreshes a blob's time when a client reads or checks it, so CollectGarbage
// spares it for its grace: the client may be about to put a manifest naming it.
func (r *Registry) touchBlob(digest string) {
	if !strings.HasPrefix(digest, "sha256:") || strings.ContainsAny(digest, "/.") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	os.Chtimes(filepath.Join(r.blobs, "sha256", strings.TrimPrefix(digest, "sha256:")), now, now)
}

func (r *Registry) serveGC(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	grace := time.Hour
	if g := req.URL.Query().Get("grace"); g != "" {
		d, err := time.ParseDuration(g)
		if err != nil || d < 0 {
			http.Error(w, "grace: want a duration", http.StatusBadRequest)
			return
		}
		grace = d
	}
	res, err := r.CollectGarbage(grace, req.URL.Query().Get("dry_run") == "true")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}
