package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an http.Handler serving the OCI distribution API from a folder.
type Registry struct {
	dir     string // the manifest journal
	blobs   string
	handler http.Handler
	creds   Credentials
	mu      sync.Mutex // orders journal writes, blob touches and garbage collection
}

// manifestPath matches /v2/<repo>/manifests/<reference>.
var manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)

// journalDir is the folder, inside each repository's folder, that holds its manifests. No
// repository path component can start with an underscore, so it never collides.
const journalDir = "_manifests"

// New opens (or creates) a registry stored under dir and replays its manifests. Every
// request needs one of creds: the push credential for anything but reads.
func New(dir string, logger *slog.Logger, creds Credentials) (*Registry, error) {
	if creds.Push.Password == "" {
		return nil, errors.New("registry: a push credential is required")
	}
	blobs := filepath.Join(dir, "blobs")
	manifests := filepath.Join(dir, "manifests")
	for _, d := range []string{blobs, manifests} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}
	var upstreamLog *log.Logger
	if logger != nil {
		upstreamLog = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	} else {
		upstreamLog = log.New(io.Discard, "", 0)
	}
	r := &Registry{
		creds: creds,
		dir:   manifests,
		blobs: blobs,
		handler: ggcr.New(
			ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(blobs)),
			ggcr.Logger(upstreamLog),
		),
	}
	if err := r.replay(); err != nil {
		return nil, err
	}
	return r, nil
}

// journaled is a manifest as stored on disk.
type journaled struct {
	ContentType string `json:"content_type"`
	Manifest    []byte `json:"manifest"`
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.authorize(w, req) {
		return
	}
	if req.URL.Path == GCPath {
		r.serveGC(w, req)
		return
	}
	// Names are checked before anything (a journal path, a blob's time) is made of them.
	if status, code, ok := checkPath(req); !ok {
		writeError(w, status, code, "not a repository path of the distribution API with a valid name")
		return
	}
	if b := blobPath.FindStringSubmatch(req.URL.Path); b != nil {
		r.touchBlob(b[1])
	} else if mount := req.URL.Query().Get("mount"); mount != "" {
		r.touchBlob(mount)
	}
	m := manifestPath.FindStringSubmatch(req.URL.Path)
	if m == nil || (req.Method != http.MethodPut && req.Method != http.MethodDelete) {
		r.handler.ServeHTTP(w, req)
		return
	}
	repo, ref := m[1], m[2]
	var body []byte
	if req.Method == http.MethodPut {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	// Journal only what the registry accepted, in the order it accepted it.
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := httptest.NewRecorder()
	r.handler.ServeHTTP(rec, req)
	if rec.Code/100 == 2 {
		if err := r.journal(req.Method, repo, ref, req.Header.Get("Content-Type"), body, rec.Header().Get("Docker-Content-Digest")); err != nil {
			http.Error(w, "registry: journal manifest: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (r *Registry) refPath(repo, ref string) string {
	return filepath.Join(r.dir, filepath.FromSlash(repo), journalDir, ref+".json")
}

func (r *Registry) journal(method, repo, ref, contentType string, body []byte, digest string) error {
	if method == http.MethodDelete {
		if err := os.Remove(r.refPath(repo, ref)); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	b, err := json.Marshal(journaled{ContentType: contentType, Manifest: body})
	if err != nil {
		return err
	}
	// The registry answers the manifest under its tag and under its digest.
	refs := []string{ref}
	if digest != "" && digest != ref {
		refs = append(refs, digest)
	}
	for _, ref := range refs {
		if err := writeFileAtomic(r.refPath(repo, ref), b); err != nil {
			return err
		}
	}
	return nil
}

// replay puts every journaled manifest back into the in-memory registry: image manifests
// before indexes (an index needs its children), digests before tags.
func (r *Registry) replay() error {
	type entry struct {
		repo, ref string
		j         journaled
	}
	var entries []entry
	err := filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(r.dir, path)
		repo, file, ok := strings.Cut(filepath.ToSlash(rel), "/"+journalDir+"/")
		if !ok {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var j journaled
		if err := json.Unmarshal(b, &j); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		entries = append(entries, entry{repo: repo, ref: strings.TrimSuffix(file, ".json"), j: j})
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: read journal: %w", err)
	}
	rank := func(e entry) int {
		n := 0
		if types.MediaType(e.j.ContentType).IsIndex() {
			n += 2
		}
		if !strings.HasPrefix(e.ref, "sha256:") {
			n++
		}
		return n
	}
	sort.SliceStable(entries, func(i, j int) bool { return rank(entries[i]) < rank(entries[j]) })
	for _, e := range entries {
		req := httptest.NewRequest(http.MethodPut, "/v2/"+e.repo+"/manifests/"+e.ref, bytes.NewReader(e.j.Manifest))
		req.Header.Set("Content-Type", e.j.ContentType)
		rec := httptest.NewRecorder()
		r.handler.ServeHTTP(rec, req)
		if rec.Code/100 != 2 {
			return fmt.Errorf("registry: replay %s:%s: %d %s", e.repo, e.ref, rec.Code, rec.Body.String())
		}
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
