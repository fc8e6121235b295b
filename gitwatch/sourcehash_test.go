package gitwatch_test

import (
	"context"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// A service's source leaves out the gilliam.yml files: a commit that edits only them
// builds nothing, whatever the service's path; any other file under the path still counts.
func TestSourceHashLeavesOutConfiguration(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "src")
	c1 := r.Commit(map[string]string{"main.go": "package main\n", "gilliam.yml": "x: 1\n", "deploy/gilliam.yml": "y: 1\n", "api/main.go": "package api\n"}, "init")
	c2 := r.Commit(map[string]string{"gilliam.yml": "x: 2\n", "deploy/gilliam.yml": "y: 2\n"}, "configuration only")
	c3 := r.Commit(map[string]string{"main.go": "package main // 2\n"}, "code")
	c4 := r.Commit(map[string]string{"deploy/other.txt": "z\n"}, "a file beside a gilliam.yml")

	repo, err := gitwatch.Open(r.URL, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Fetch(context.Background(), "refs/heads/main"); err != nil {
		t.Fatal(err)
	}
	files := []string{"gilliam.yml", "deploy/gilliam.yml"}
	hash := func(commit, path string) string {
		t.Helper()
		h, err := repo.SourceHash(commit, path, files)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if hash(c1, ".") != hash(c2, ".") {
		t.Error("the root's source changed with gilliam.yml alone")
	}
	if hash(c2, ".") == hash(c3, ".") {
		t.Error("the root's source did not change with main.go")
	}
	if hash(c3, ".") == hash(c4, ".") {
		t.Error("a new file beside deploy/gilliam.yml did not count")
	}
	if hash(c1, "deploy") != hash(c2, "deploy") {
		t.Error("deploy's source changed with its gilliam.yml alone")
	}
	// A folder without a gilliam.yml is its plain tree hash.
	tree, err := repo.TreeHash(c1, "api")
	if err != nil || hash(c1, "api") != tree {
		t.Errorf("api: source %s, tree %s (%v)", hash(c1, "api"), tree, err)
	}
}
