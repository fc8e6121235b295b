package registry_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

// Each refusal of the registry, and what each credential may do: anyone without a
// credential gets 401 with a Basic challenge (even to read), the pull credential reads but
// cannot push, delete a tag or collect garbage (403), a wrong password is anonymous, and
// the push credential does everything.
func TestRegistryAsksWhoYouAre(t *testing.T) {
	dir := t.TempDir()
	reg, err := registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	tag, _ := name.NewTag(host+"/team/app:v1", name.Insecure)
	img, _ := random.Image(512, 1)

	// Anonymous: 401 everywhere, with a challenge clients understand.
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v2/"},
		{http.MethodGet, "/v2/team/app/manifests/v1"},
		{http.MethodPost, "/v2/team/app/blobs/uploads/"},
		{http.MethodPut, "/v2/team/app/manifests/v1"},
		{http.MethodDelete, "/v2/team/app/manifests/v1"},
		{http.MethodPost, registry.GCPath + "?grace=0s"},
	} {
		resp, err := do(t, c.method, srv.URL+c.path, registry.Credential{})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="gilliam-sync registry"` {
			t.Errorf("anonymous %s %s: %s, WWW-Authenticate %q", c.method, c.path, resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	}
	if err := remote.Write(tag, img); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("anonymous push through go-containerregistry: %v, want 401", err)
	}
	wrong := remote.WithAuth(&authn.Basic{Username: "push", Password: "guess"})
	if err := remote.Write(tag, img, wrong); err == nil {
		t.Error("a wrong password pushed")
	}

	// The pull credential cannot push.
	if err := remote.Write(tag, img, pullAuth); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("push with the pull credential: %v, want DENIED", err)
	}
	// The push credential pushes (Basic challenge answered by go-containerregistry).
	if err := remote.Write(tag, img, pushAuth); err != nil {
		t.Fatalf("push with the push credential: %v", err)
	}
	// The pull credential reads, with Basic or as a bearer token.
	got, err := remote.Image(tag, pullAuth)
	if err != nil {
		t.Fatalf("pull with the pull credential: %v", err)
	}
	if _, err := got.RawConfigFile(); err != nil {
		t.Fatalf("config blob with the pull credential: %v", err)
	}
	req, _ := http.NewRequest(http.MethodHead, srv.URL+"/v2/team/app/manifests/v1", nil)
	req.Header.Set("Authorization", "Bearer "+testCreds.Pull.Password)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD with the pull password as a bearer token: %v %v", resp.Status, err)
	}
	// ... but cannot delete or collect garbage.
	if err := remote.Delete(tag, pullAuth); err == nil {
		t.Error("the pull credential deleted a tag")
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodDelete, "/v2/team/app/manifests/v1"},
		{http.MethodPost, registry.GCPath + "?grace=0s"},
		{http.MethodPost, "/v2/team/app/blobs/uploads/"},
	} {
		resp, err := do(t, c.method, srv.URL+c.path, testCreds.Pull)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "DENIED") {
			t.Errorf("pull credential %s %s: %s %s", c.method, c.path, resp.Status, b)
		}
	}
	if _, err := remote.Head(tag, pullAuth); err != nil {
		t.Fatalf("the tag went after refused deletes: %v", err)
	}
	// The push credential collects garbage and deletes.
	if resp, err := do(t, http.MethodPost, srv.URL+registry.GCPath+"?dry_run=true", testCreds.Push); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("gc with the push credential: %v %v", resp.Status, err)
	}
	if err := remote.Delete(tag, pushAuth); err != nil {
		t.Errorf("delete with the push credential: %v", err)
	}
}

// A repository name outside the distribution grammar is refused with 400 before any path
// is made of it: `PUT /v2/../../x/manifests/y` once wrote x/_manifests/y.json outside the
// registry's folder. Nothing is written anywhere for any of them.
func TestRegistryRefusesBadNames(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data", "registry")
	reg, err := registry.New(dir, nil, testCreds)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	before := files(t, root)

	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	for _, path := range []string{
		"/v2/../../x/manifests/y",
		"/v2/%2e%2e/%2e%2e/x/manifests/y",
		"/v2/team/../../../x/manifests/y",
		"/v2/team/_manifests/manifests/y",
		"/v2/Team/App/manifests/y",
		"/v2/team//app/manifests/y",
		"/v2/team/app/manifests/..",
		"/v2/team/app/manifests/a%2fb",
		"/v2/" + strings.Repeat("a/", 130) + "a/manifests/y",
	} {
		resp, err := do(t, http.MethodPut, srv.URL+path, testCreds.Push, manifest)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "NAME_INVALID") {
			t.Errorf("PUT %s: %s %s, want 400 NAME_INVALID", path, resp.Status, b)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "x")); err == nil {
		t.Error("x written outside the registry's folder")
	}
	if after := files(t, root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("files changed under %s:\nbefore %v\nafter  %v", root, before, after)
	}
	// A valid name still works, for contrast.
	host := strings.TrimPrefix(srv.URL, "http://")
	tag, _ := name.NewTag(host+"/team/app-1.x__y:v1", name.Insecure)
	img, _ := random.Image(64, 1)
	if err := remote.Write(tag, img, pushAuth); err != nil {
		t.Fatalf("push with a valid name: %v", err)
	}
}

func files(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}
