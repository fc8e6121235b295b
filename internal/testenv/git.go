package testenv

import (
	"crypto/subtle"
	"io/fs"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// GitServer is a real git server over smart HTTP: `git http-backend` behind net/http/cgi,
// on 127.0.0.1. Repositories live under Root as bare repositories that accept pushes.
type GitServer struct {
	// URL is the server's base URL; a repository is URL + "/" + name + ".git".
	URL string
	// Root holds the bare repositories.
	Root string

	user, password string

	mu     sync.Mutex
	counts map[string]int // "<repo> <kind>" -> requests
}

// GitOption changes how NewGitServer serves.
type GitOption func(*GitServer)

// GitBasicAuth requires HTTP basic authentication with this user and password.
func GitBasicAuth(user, password string) GitOption {
	return func(s *GitServer) { s.user, s.password = user, password }
}

// NewGitServer starts a git server; t.Cleanup stops it.
func NewGitServer(t testing.TB, opts ...GitOption) *GitServer {
	t.Helper()
	s := &GitServer{Root: t.TempDir(), counts: map[string]int{}}
	for _, o := range opts {
		o(s)
	}
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("testenv: git --exec-path: %v", err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.user)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(s.password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		s.count(r)
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Request kinds counted by Count.
const (
	// GitListRefs is a ref advertisement for fetching (what ls-remote and go-git's
	// Remote.List ask for): GET info/refs?service=git-upload-pack.
	GitListRefs = "list-refs"
	// GitFetch is a pack negotiation: POST git-upload-pack.
	GitFetch = "fetch"
	// GitPush is a push: POST git-receive-pack.
	GitPush = "push"
)

func (s *GitServer) count(r *http.Request) {
	repo, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), ".git/")
	if !ok {
		return
	}
	var kind string
	switch {
	case r.Method == http.MethodGet && rest == "info/refs" && r.URL.Query().Get("service") == "git-upload-pack":
		kind = GitListRefs
	case r.Method == http.MethodPost && rest == "git-upload-pack":
		kind = GitFetch
	case r.Method == http.MethodPost && rest == "git-receive-pack":
		kind = GitPush
	default:
		return
	}
	s.mu.Lock()
	s.counts[repo+" "+kind]++
	s.mu.Unlock()
}

// Count is how many requests of a kind (GitListRefs, GitFetch, GitPush) the repository has
// served.
func (s *GitServer) Count(repo, kind string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[repo+" "+kind]
}

// GitRepo is a bare repository on a GitServer and a working clone to commit from.
type GitRepo struct {
	// Name is the repository's name on the server.
	Name string
	// URL is the repository's clone URL, without credentials.
	URL string
	// Bare is the path of the bare repository on disk.
	Bare string
	// Work is the working clone commits are made in; it tracks main.
	Work string

	t       testing.TB
	pushURL string
}

// NewRepo creates an empty repository whose default branch is main.
func (s *GitServer) NewRepo(t testing.TB, name string) *GitRepo {
	t.Helper()
	r := &GitRepo{
		Name: name,
		URL:  s.URL + "/" + name + ".git",
		Bare: filepath.Join(s.Root, name+".git"),
		Work: filepath.Join(t.TempDir(), name),
		t:    t,
	}
	r.pushURL = r.URL
	if s.user != "" {
		u, _ := url.Parse(r.URL)
		u.User = url.UserPassword(s.user, s.password)
		r.pushURL = u.String()
	}
	runGit(t, "", "init", "--bare", "--initial-branch=main", r.Bare)
	runGit(t, r.Bare, "config", "http.receivepack", "true")
	runGit(t, "", "init", "--initial-branch=main", r.Work)
	runGit(t, r.Work, "remote", "add", "origin", r.pushURL)
	return r
}

// Commit writes files (path -> content; "" deletes the path) in the working clone, commits
// them on main and pushes. It returns the new commit's hash.
func (r *GitRepo) Commit(files map[string]string, msg string) string {
	r.t.Helper()
	return r.CommitOn("main", files, msg)
}

// CommitOn is Commit on another branch, created from the current HEAD when it is new.
func (r *GitRepo) CommitOn(branch string, files map[string]string, msg string) string {
	r.t.Helper()
	r.checkout(branch)
	for path, content := range files {
		full := filepath.Join(r.Work, filepath.FromSlash(path))
		if content == "" {
			runGit(r.t, r.Work, "rm", "-r", "-q", "--ignore-unmatch", "--", path)
			os.RemoveAll(full)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	return r.commitAndPush(branch, msg)
}

// CommitDir copies the folder src into the working clone at dst ("" for the root), commits
// it on main and pushes. It returns the new commit's hash.
func (r *GitRepo) CommitDir(src, dst, msg string) string {
	r.t.Helper()
	r.checkout("main")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(r.Work, dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		r.t.Fatalf("testenv: copy %s: %v", src, err)
	}
	return r.commitAndPush("main", msg)
}

func (r *GitRepo) checkout(branch string) {
	r.t.Helper()
	if strings.TrimSpace(runGit(r.t, r.Work, "branch", "--show-current")) == branch {
		return
	}
	if runGit(r.t, r.Work, "branch", "--list", branch) != "" {
		runGit(r.t, r.Work, "checkout", "-q", branch)
		return
	}
	runGit(r.t, r.Work, "checkout", "-q", "-b", branch)
}

func (r *GitRepo) commitAndPush(branch, msg string) string {
	r.t.Helper()
	runGit(r.t, r.Work, "add", "-A")
	runGit(r.t, r.Work, "commit", "-q", "--allow-empty", "-m", msg)
	// Forced: the working clone is the only writer, so after ResetHard a commit is a
	// force-push, as a rewrite of history would be.
	runGit(r.t, r.Work, "push", "-q", "--force", "origin", branch)
	return r.Head()
}

// Head is the commit the working clone is at.
func (r *GitRepo) Head() string {
	r.t.Helper()
	return strings.TrimSpace(runGit(r.t, r.Work, "rev-parse", "HEAD"))
}

// PushRef points ref (refs/heads/x, refs/tags/v1, refs/pull/1/head, ...) at commit on the
// server; a ref that moves backwards or sideways is force-pushed.
func (r *GitRepo) PushRef(ref, commit string) {
	r.t.Helper()
	runGit(r.t, r.Work, "push", "-q", "--force", "origin", commit+":"+ref)
}

// ResetHard moves the working clone's current branch to commit (for a force-push with
// PushRef afterwards, or new commits on top of an older one).
func (r *GitRepo) ResetHard(commit string) {
	r.t.Helper()
	runGit(r.t, r.Work, "reset", "-q", "--hard", commit)
}

// DeleteRef deletes ref on the server.
func (r *GitRepo) DeleteRef(ref string) {
	r.t.Helper()
	runGit(r.t, r.Work, "push", "-q", "origin", ":"+ref)
}

// runGit runs git in dir with a clean, fixed identity and fails the test on error.
func runGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=gilliam test", "GIT_AUTHOR_EMAIL=test@gilliam.invalid",
		"GIT_COMMITTER_NAME=gilliam test", "GIT_COMMITTER_EMAIL=test@gilliam.invalid",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
