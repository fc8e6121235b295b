package gitwatch_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A monorepo with two services: a commit touching one service's folder reports only that
// service; a commit touching only gilliam.yml reports none.
func TestChanged(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "mono")
	c1 := r.Commit(map[string]string{
		"services/api/main.go":   "package main\n",
		"services/api/go.mod":    "module api\n",
		"services/web/index.htm": "<h1>1</h1>\n",
		"gilliam.yml":            "formation: mono\n",
	}, "init")
	c2 := r.Commit(map[string]string{"services/web/index.htm": "<h1>2</h1>\n"}, "web only")
	c3 := r.Commit(map[string]string{"gilliam.yml": "formation: mono # scaled\n"}, "config only")
	c4 := r.Commit(map[string]string{"services/api/go.mod": "", "services/api/lib/x.go": "package lib\n"}, "api: a file moves")
	c5 := r.Commit(map[string]string{"services/worker/main.go": "package main\n"}, "a new service")

	repo, err := gitwatch.Open(r.URL, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Fetch(context.Background(), "refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	services := map[string]string{"api": "services/api", "web": "services/web", "worker": "services/worker"}
	for _, tc := range []struct {
		name     string
		from, to string
		want     []string
	}{
		{"one service's folder", c1, c2, []string{"web"}},
		{"gilliam.yml only", c2, c3, nil},
		{"a file added and one removed", c3, c4, []string{"api"}},
		{"a service's folder appears", c4, c5, []string{"worker"}},
		{"across several commits", c1, c4, []string{"api", "web"}},
		{"same commit", c3, c3, nil},
		{"nothing deployed yet", "", c1, []string{"api", "web", "worker"}},
	} {
		got, err := repo.Changed(tc.from, tc.to, services)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: changed %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := repo.Changed(c1, "0123456789012345678901234567890123456789", services); err == nil {
		t.Error("a commit the cache lacks compared without error")
	}
}

func TestTreeHashAndExport(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "mono")
	c1 := r.Commit(map[string]string{"api/main.go": "package main\n", "web/index.html": "<h1>1</h1>\n", "gilliam.yml": "x: 1\n"}, "init")
	c2 := r.Commit(map[string]string{"web/index.html": "<h1>2</h1>\n", "gilliam.yml": "x: 2\n"}, "web only")

	repo, err := gitwatch.Open(r.URL, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Fetch(context.Background(), "refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	hash := func(commit, path string) string {
		h, err := repo.TreeHash(commit, path)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if hash(c1, "api") != hash(c2, "api") {
		t.Error("api changed although no file under it did")
	}
	if hash(c1, "web") == hash(c2, "web") {
		t.Error("web did not change although index.html did")
	}
	if hash(c1, ".") == hash(c2, ".") {
		t.Error("the root did not change")
	}
	if _, err := repo.TreeHash(c2, "nope"); !errors.Is(err, gitwatch.ErrNotFound) {
		t.Errorf("a missing folder: %v", err)
	}
	if _, err := repo.TreeHash(c2, "gilliam.yml"); err == nil {
		t.Error("a file has a tree hash")
	}

	b, err := repo.ReadFile(c2, "gilliam.yml")
	if err != nil || string(b) != "x: 2\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	if _, err := repo.ReadFile(c2, "nope.yml"); !errors.Is(err, gitwatch.ErrNotFound) {
		t.Errorf("a missing file: %v", err)
	}
	dir := t.TempDir()
	if err := repo.Export(c2, "web", dir); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "index.html"))
	if err != nil || string(got) != "<h1>2</h1>\n" {
		t.Fatalf("exported: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err == nil {
		t.Fatal("export of web holds a file of api")
	}
}
