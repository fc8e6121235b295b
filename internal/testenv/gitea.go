package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Gitea is a real Gitea running for one test: the binary `make tools` built, on 127.0.0.1
// and a free port, with its own data folder and SQLite database, stopped by t.Cleanup. Its
// API, git over smart HTTP and its webhooks work (webhooks to loopback addresses only); its
// web UI's scripts are absent.
type Gitea struct {
	// URL is the server's root, http://127.0.0.1:PORT.
	URL string
	// Admin and Password are the site administrator's; Token is an API token of theirs
	// with every scope.
	Admin, Password, Token string

	t       testing.TB
	dir     string
	logPath string
}

// NewGitea starts a Gitea: app.ini, `gitea migrate`, `gitea admin user create --admin`,
// `gitea web`, and waits until its API answers.
func NewGitea(t testing.TB) *Gitea {
	t.Helper()
	bin := tool(t, "gitea")
	static := filepath.Join(ToolsDir(t), "gitea", "static")
	if _, err := os.Stat(filepath.Join(static, "templates")); err != nil {
		t.Fatalf("testenv: gitea's templates not found at %s: run `make tools` (make test does)", static)
	}
	dir := t.TempDir()
	port := FreePort(t)
	g := &Gitea{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Admin: "gilliam", Password: "gilliam-" + randomHex(8),
		t: t, dir: dir, logPath: filepath.Join(dir, "gitea.out")}
	ini := fmt.Sprintf(`I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
APP_NAME = gilliam-test
RUN_MODE = prod
WORK_PATH = %[1]s

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = %[2]d
ROOT_URL = %[3]s/
DOMAIN = 127.0.0.1
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = %[4]s
APP_DATA_PATH = %[1]s/data

[database]
DB_TYPE = sqlite3
PATH = %[1]s/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = %[1]s/repos

[security]
INSTALL_LOCK = true
SECRET_KEY = %[5]s
INTERNAL_TOKEN = %[6]s
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[service]
DISABLE_REGISTRATION = true

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[queue]
TYPE = channel

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[mailer]
ENABLED = false

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = %[1]s/log
`, dir, port, g.URL, static, randomHex(32), randomHex(32))
	conf := filepath.Join(dir, "app.ini")
	writeFile(t, conf, ini)
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--config", conf, "--work-path", dir}, args...)...)
		cmd.Env = g.env()
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("testenv: gitea %s: %v\n%s", args[0], err, out)
		}
	}
	run("migrate")
	run("admin", "user", "create", "--username", g.Admin, "--password", g.Password, "--email", g.Admin+"@gilliam.invalid",
		"--admin", "--must-change-password=false")

	logf, err := os.Create(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", conf, "--work-path", dir, "web", "--port", strconv.Itoa(port))
	cmd.Env, cmd.Dir = g.env(), dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start gitea: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("testenv: gitea exited\n%s", g.LogTail())
		default:
		}
		resp, err := http.Get(g.URL + "/api/v1/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: gitea did not answer within 60s: %v\n%s", err, g.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.Token = g.NewToken(t, g.Admin, g.Password, "admin")
	return g
}

// env runs Gitea with this test's folder as its home: no user's git configuration.
func (g *Gitea) env() []string {
	return append(os.Environ(), "HOME="+g.dir, "GITEA_WORK_DIR="+g.dir, "GIT_CONFIG_NOSYSTEM=1", "USER=root")
}

// LogTail is the end of Gitea's output and log, for failure messages.
func (g *Gitea) LogTail() string {
	var all []byte
	for _, p := range []string{g.logPath, filepath.Join(g.dir, "log", "gitea.log")} {
		b, _ := os.ReadFile(p)
		all = append(all, b...)
	}
	if len(all) > 4000 {
		all = all[len(all)-4000:]
	}
	return string(bytes.TrimSpace(all))
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// API calls Gitea's API as the administrator (token) and decodes the answer into out (nil:
// dropped). It fails the test on an answer other than 2xx.
func (g *Gitea) API(t testing.TB, method, path string, body, out any) {
	t.Helper()
	if code, msg := g.Call(method, path, "token "+g.Token, body, out); code/100 != 2 {
		t.Fatalf("testenv: gitea %s %s: %d %s", method, path, code, msg)
	}
}

// Call is one API request with the given Authorization header; it returns the status code
// and, for an error, the body.
func (g *Gitea) Call(method, path, auth string, body, out any) (int, string) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.URL+"/api/v1"+path, rd)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, string(data)
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Sprintf("decode %s: %v", data, err)
		}
	}
	return resp.StatusCode, ""
}

// NewUser creates a user (not an administrator) and returns an API token of theirs with
// every scope.
func (g *Gitea) NewUser(t testing.TB, name string) (password, token string) {
	t.Helper()
	password = "pw-" + randomHex(8)
	g.API(t, "POST", "/admin/users", map[string]any{"username": name, "email": name + "@gilliam.invalid",
		"password": password, "must_change_password": false}, nil)
	return password, g.NewToken(t, name, password, name+"-token")
}

// NewToken creates an API token with every scope for a user, with their password.
func (g *Gitea) NewToken(t testing.TB, user, password, name string) string {
	t.Helper()
	var tok struct {
		SHA1 string `json:"sha1"`
	}
	basic := "Basic " + basicAuth(user, password)
	if code, msg := g.Call("POST", "/users/"+url.PathEscape(user)+"/tokens", basic,
		map[string]any{"name": name + "-" + randomHex(4), "scopes": []string{"all"}}, &tok); code/100 != 2 {
		t.Fatalf("testenv: gitea token for %s: %d %s", user, code, msg)
	}
	return tok.SHA1
}

func basicAuth(user, password string) string {
	return base64Std(user + ":" + password)
}

// GiteaRepo is a repository on a Gitea, with a working clone to commit in.
type GiteaRepo struct {
	Owner, Name string
	// CloneURL is the repository's URL over HTTP, without credentials.
	CloneURL string
	Work     string

	g       *Gitea
	t       testing.TB
	token   string // the owner's
	pushURL string
}

// NewRepo creates an empty repository of the administrator (default branch main) and a
// working clone of it.
func (g *Gitea) NewRepo(t testing.TB, name string) *GiteaRepo {
	t.Helper()
	g.API(t, "POST", "/user/repos", map[string]any{"name": name, "default_branch": "main", "private": false}, nil)
	return g.repo(t, g.Admin, g.Password, g.Token, name)
}

func (g *Gitea) repo(t testing.TB, owner, password, token, name string) *GiteaRepo {
	u, _ := url.Parse(g.URL)
	r := &GiteaRepo{Owner: owner, Name: name, CloneURL: fmt.Sprintf("%s/%s/%s.git", g.URL, owner, name),
		Work: filepath.Join(t.TempDir(), name), g: g, t: t, token: token}
	u.User = url.UserPassword(owner, password)
	r.pushURL = fmt.Sprintf("%s/%s/%s.git", u.String(), owner, name)
	runGit(t, "", "init", "--initial-branch=main", r.Work)
	runGit(t, r.Work, "remote", "add", "origin", r.pushURL)
	return r
}

// Commit writes files (path -> content; "" deletes it), commits them on branch (created
// from the current HEAD when new) and pushes. It returns the commit.
func (r *GiteaRepo) Commit(branch string, files map[string]string, msg string) string {
	r.t.Helper()
	return (&GitRepo{Work: r.Work, t: r.t}).CommitOn(branch, files, msg)
}

// Fork forks the repository to user (whose password and token NewUser gave) and returns
// the fork, with a working clone holding the parent's history.
func (r *GiteaRepo) Fork(t testing.TB, user, password, token string) *GiteaRepo {
	t.Helper()
	if code, msg := r.g.Call("POST", fmt.Sprintf("/repos/%s/%s/forks", r.Owner, r.Name), "token "+token, map[string]any{}, nil); code/100 != 2 {
		t.Fatalf("testenv: gitea fork: %d %s", code, msg)
	}
	f := r.g.repo(t, user, password, token, r.Name)
	runGit(t, f.Work, "fetch", "-q", "origin")
	runGit(t, f.Work, "checkout", "-q", "-B", "main", "origin/main")
	return f
}

func (r *GiteaRepo) api(method, path string, body, out any) {
	r.t.Helper()
	if code, msg := r.g.Call(method, fmt.Sprintf("/repos/%s/%s%s", r.Owner, r.Name, path), "token "+r.token, body, out); code/100 != 2 {
		r.t.Fatalf("testenv: gitea %s %s: %d %s", method, path, code, msg)
	}
}

// PullRequest opens a pull request from head (a branch of this repository, or
// "owner:branch" of a fork) into base and returns its number.
func (r *GiteaRepo) PullRequest(head, base, title string) int {
	r.t.Helper()
	var pr struct {
		Number int `json:"number"`
	}
	r.api("POST", "/pulls", map[string]any{"head": head, "base": base, "title": title}, &pr)
	return pr.Number
}

// ClosePullRequest closes pull request n without merging it.
func (r *GiteaRepo) ClosePullRequest(n int) {
	r.t.Helper()
	r.api("PATCH", fmt.Sprintf("/pulls/%d", n), map[string]any{"state": "closed"}, nil)
}

// AddWebhook makes Gitea send push and pull-request events to target, signed with secret.
func (r *GiteaRepo) AddWebhook(target, secret string) {
	r.t.Helper()
	r.api("POST", "/hooks", map[string]any{"type": "gitea", "active": true, "events": []string{"push", "pull_request"},
		"config": map[string]string{"url": target, "content_type": "json", "secret": secret}}, nil)
}

// CommitStatus is a commit status as Gitea's API shows it.
type CommitStatus struct {
	ID          int64  `json:"id"`
	State       string `json:"status"`
	Context     string `json:"context"`
	Description string `json:"description"`
	TargetURL   string `json:"target_url"`
}

// Statuses lists a commit's statuses, newest first: by ID, as Gitea's combined status
// takes them. Gitea's own newest-first order is by creation time in whole seconds, which
// puts a pending and the success posted in the same second in either order.
func (r *GiteaRepo) Statuses(commit string) []CommitStatus {
	r.t.Helper()
	var out []CommitStatus
	r.api("GET", "/commits/"+commit+"/statuses?limit=50", nil, &out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out
}

// StatusesAsListed lists a commit's statuses in Gitea's own default order: newest first by
// creation time, in whole seconds.
func (r *GiteaRepo) StatusesAsListed(commit string) []CommitStatus {
	r.t.Helper()
	var out []CommitStatus
	r.api("GET", "/commits/"+commit+"/statuses?limit=50", nil, &out)
	return out
}

// IssueComment is a comment on a pull request.
type IssueComment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User struct {
		Login string `json:"login"`
	} `json:"user"`
}

// Comments lists a pull request's comments, oldest first.
func (r *GiteaRepo) Comments(pr int) []IssueComment {
	r.t.Helper()
	var out []IssueComment
	r.api("GET", fmt.Sprintf("/issues/%d/comments", pr), nil, &out)
	return out
}

// CommentAs posts a comment on pull request pr with another user's token.
func (r *GiteaRepo) CommentAs(token string, pr int, body string) {
	r.t.Helper()
	if code, msg := r.g.Call("POST", fmt.Sprintf("/repos/%s/%s/issues/%d/comments", r.Owner, r.Name, pr), "token "+token,
		map[string]any{"body": body}, nil); code/100 != 2 {
		r.t.Fatalf("testenv: gitea comment: %d %s", code, msg)
	}
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
