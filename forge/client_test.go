package forge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// exchange is one request the fake API expects, in order, and its answer: a documented
// response shape from testdata.
type exchange struct {
	method, uri string            // uri: the escaped path and query
	header      map[string]string // headers that must be sent exactly
	body        map[string]any    // the JSON body, nil for none
	code        int
	answer      string // a testdata file, or literal JSON
	respHeader  map[string]string
}

// fakeAPI serves the exchanges in order and fails the test on any other request.
func fakeAPI(t *testing.T, want []exchange) (*httptest.Server, func() int) {
	t.Helper()
	var mu sync.Mutex
	next := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if next >= len(want) {
			t.Errorf("unexpected request %s %s", r.Method, r.URL.RequestURI())
			http.Error(w, "unexpected", 500)
			return
		}
		x := want[next]
		next++
		if r.Method != x.method || r.URL.RequestURI() != x.uri {
			t.Errorf("request %d: got %s %s, want %s %s", next, r.Method, r.URL.RequestURI(), x.method, x.uri)
		}
		for k, v := range x.header {
			if got := r.Header.Get(k); got != v {
				t.Errorf("request %d (%s %s): header %s = %q, want %q", next, x.method, x.uri, k, got, v)
			}
		}
		data, _ := io.ReadAll(r.Body)
		if x.body == nil && len(data) > 0 {
			t.Errorf("request %d: unexpected body %s", next, data)
		}
		if x.body != nil {
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("request %d: Content-Type %q", next, ct)
			}
			var got map[string]any
			if err := json.Unmarshal(data, &got); err != nil || !reflect.DeepEqual(got, x.body) {
				t.Errorf("request %d (%s %s): body %s, want %v", next, x.method, x.uri, data, x.body)
			}
		}
		for k, v := range x.respHeader {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(x.code)
		answer := x.answer
		if answer != "" && !strings.HasPrefix(answer, "{") && !strings.HasPrefix(answer, "[") {
			b, err := os.ReadFile("testdata/" + answer)
			if err != nil {
				t.Fatal(err)
			}
			answer = string(b)
		}
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return next }
}

func token(v string) func() (string, error) { return func() (string, error) { return v, nil } }

const sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e"

func TestGitHubRequests(t *testing.T) {
	gh := map[string]string{"Authorization": "Bearer ghs_secret", "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
	srv, done := fakeAPI(t, []exchange{
		{method: "POST", uri: "/repos/acme/shop/statuses/" + sha, header: gh,
			body: map[string]any{"state": "pending", "context": "gilliam/shop", "description": "building"}, code: 201, answer: "github-status.json"},
		{method: "POST", uri: "/repos/acme/shop/statuses/" + sha, header: gh,
			body: map[string]any{"state": "success", "context": "gilliam/shop", "description": "deployed", "target_url": "https://shop.apps.example.com/"},
			code: 201, answer: "github-status.json"},
		{method: "GET", uri: "/user", header: gh, code: 200, answer: "github-user.json"},
		{method: "GET", uri: "/repos/acme/shop/issues/7/comments?per_page=100&page=1", header: gh, code: 200, answer: "github-comments.json"},
		{method: "POST", uri: "/repos/acme/shop/issues/8/comments", header: gh, body: map[string]any{"body": "hello"}, code: 201, answer: "github-comment-created.json"},
		{method: "PATCH", uri: "/repos/acme/shop/issues/comments/1002", header: gh, body: map[string]any{"body": "edited"}, code: 200, answer: "github-comment-created.json"},
		{method: "GET", uri: "/repos/acme/shop/pulls?per_page=100&page=1&state=open", header: gh, code: 200, answer: "github-pulls.json"},
	})
	c, err := New(Config{Kind: GitHub, API: srv.URL, RepoURL: "https://github.com/acme/shop.git", Token: token("ghs_secret")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.SetStatus(ctx, Status{Commit: sha, Context: "gilliam/shop", State: Pending, Description: "building"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(ctx, Status{Commit: sha, Context: "gilliam/shop", State: Success, Description: "deployed", TargetURL: "https://shop.apps.example.com/"}); err != nil {
		t.Fatal(err)
	}
	if me, err := c.Me(ctx); err != nil || me != "gilliam-bot" {
		t.Fatalf("Me = %q, %v", me, err)
	}
	cs, err := c.Comments(ctx, 7)
	if err != nil || len(cs) != 2 || cs[1] != (Comment{ID: 1002, Body: "<!-- gilliam-sync preview shop-pr-7 -->\nold text", Author: "gilliam-bot"}) {
		t.Fatalf("Comments = %+v, %v", cs, err)
	}
	if id, err := c.CreateComment(ctx, 8, "hello"); err != nil || id != 2001 {
		t.Fatalf("CreateComment = %d, %v", id, err)
	}
	if err := c.EditComment(ctx, 7, 1002, "edited"); err != nil {
		t.Fatal(err)
	}
	if prs, err := c.OpenPullRequests(ctx); err != nil || !reflect.DeepEqual(prs, []int{7, 9}) {
		t.Fatalf("OpenPullRequests = %v, %v", prs, err)
	}
	if done() != 7 {
		t.Fatalf("%d requests made, want 7", done())
	}
}

// A listing longer than a page is read page by page.
func TestGitHubPagination(t *testing.T) {
	var page1 []map[string]any
	for i := 1; i <= 100; i++ {
		page1 = append(page1, map[string]any{"number": i})
	}
	b, _ := json.Marshal(page1)
	srv, _ := fakeAPI(t, []exchange{
		{method: "GET", uri: "/repos/acme/shop/pulls?per_page=100&page=1&state=open", code: 200, answer: string(b)},
		{method: "GET", uri: "/repos/acme/shop/pulls?per_page=100&page=2&state=open", code: 200, answer: `[{"number": 101}]`},
	})
	c, _ := New(Config{Kind: GitHub, API: srv.URL, Project: "acme/shop", Token: token("t")})
	prs, err := c.OpenPullRequests(context.Background())
	if err != nil || len(prs) != 101 || prs[100] != 101 {
		t.Fatalf("got %d pull requests, %v", len(prs), err)
	}
}

func TestGitHubRateLimit(t *testing.T) {
	reset := time.Now().Add(90 * time.Second).Unix()
	srv, _ := fakeAPI(t, []exchange{
		{method: "POST", uri: "/repos/acme/shop/statuses/" + sha, body: map[string]any{"state": "failure", "context": "gilliam/shop", "description": "x"},
			code: 403, answer: `{"message": "API rate limit exceeded for installation ID 1."}`,
			respHeader: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": strconv.FormatInt(reset, 10)}},
		{method: "POST", uri: "/repos/acme/shop/statuses/" + sha, body: map[string]any{"state": "failure", "context": "gilliam/shop", "description": "x"},
			code: 403, answer: `{"message": "You have exceeded a secondary rate limit."}`, respHeader: map[string]string{"Retry-After": "30"}},
		{method: "POST", uri: "/repos/acme/shop/statuses/" + sha, body: map[string]any{"state": "failure", "context": "gilliam/shop", "description": "x"},
			code: 403, answer: `{"message": "Resource not accessible by integration"}`},
	})
	c, _ := New(Config{Kind: GitHub, API: srv.URL, Project: "acme/shop", Token: token("t")})
	st := Status{Commit: sha, Context: "gilliam/shop", State: Failure, Description: "x"}
	var limited *RateLimitedError
	if err := c.SetStatus(context.Background(), st); !errors.As(err, &limited) || limited.Until.Unix() != reset {
		t.Fatalf("primary limit: %v", err)
	}
	if err := c.SetStatus(context.Background(), st); !errors.As(err, &limited) || time.Until(limited.Until) < 25*time.Second {
		t.Fatalf("secondary limit: %v", err)
	}
	// A token without the permission: a person must act.
	if err := c.SetStatus(context.Background(), st); errors.As(err, &limited) || fault.KindOf(err) != fault.Stalled {
		t.Fatalf("forbidden: %v (kind %v)", err, fault.KindOf(err))
	}
}

func TestGitLabRequests(t *testing.T) {
	gl := map[string]string{"PRIVATE-TOKEN": "glpat-secret", "Authorization": ""}
	srv, done := fakeAPI(t, []exchange{
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/statuses/" + sha, header: gl,
			body: map[string]any{"state": "running", "name": "gilliam/billing", "description": "building", "target_url": "https://billing.apps.example.com/"},
			code: 201, answer: "gitlab-status.json"},
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/statuses/" + sha, header: gl,
			body: map[string]any{"state": "running", "name": "gilliam/billing", "description": "building", "target_url": "https://billing.apps.example.com/"},
			code: 400, answer: "gitlab-status-transition.json"},
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/statuses/" + sha, header: gl,
			body: map[string]any{"state": "failed", "name": "gilliam/billing", "description": "gilliam.yml:3:5: services.web: unknown key"},
			code: 201, answer: "gitlab-status.json"},
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/statuses/" + sha, header: gl,
			body: map[string]any{"state": "canceled", "name": "gilliam/billing", "description": "superseded"}, code: 201, answer: "gitlab-status.json"},
		{method: "GET", uri: "/api/v4/user", header: gl, code: 200, answer: `{"id": 9, "username": "gilliam-bot"}`},
		{method: "GET", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/merge_requests/3/notes?sort=asc&order_by=created_at&per_page=100&page=1", header: gl,
			code: 200, answer: "gitlab-notes.json"},
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/merge_requests/3/notes", header: gl, body: map[string]any{"body": "hi"},
			code: 201, answer: `{"id": 303, "body": "hi", "system": false, "author": {"username": "gilliam-bot"}}`},
		{method: "PUT", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/merge_requests/3/notes/302", header: gl, body: map[string]any{"body": "edited"},
			code: 200, answer: `{"id": 302, "body": "edited"}`},
		{method: "GET", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/merge_requests?state=opened&per_page=100&page=1", header: gl,
			code: 200, answer: "gitlab-mrs.json"},
		{method: "POST", uri: "/api/v4/projects/acme%2Fpay%2Fbilling/statuses/" + sha, header: gl,
			body: map[string]any{"state": "success", "name": "gilliam/billing", "description": "ok"},
			code: 429, answer: `{"message": "Retry later"}`, respHeader: map[string]string{"Retry-After": "60"}},
	})
	c, err := New(Config{Kind: GitLab, RepoURL: srv.URL + "/acme/pay/billing.git", Token: token("glpat-secret")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	running := Status{Commit: sha, Context: "gilliam/billing", State: Pending, Description: "building", TargetURL: "https://billing.apps.example.com/"}
	if err := c.SetStatus(ctx, running); err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(ctx, running); err != nil {
		t.Fatalf("the same state again is not an error: %v", err)
	}
	if err := c.SetStatus(ctx, Status{Commit: sha, Context: "gilliam/billing", State: Failure, Description: "gilliam.yml:3:5: services.web: unknown key"}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(ctx, Status{Commit: sha, Context: "gilliam/billing", State: Error, Description: "superseded"}); err != nil {
		t.Fatal(err)
	}
	if me, err := c.Me(ctx); err != nil || me != "gilliam-bot" {
		t.Fatalf("Me = %q, %v", me, err)
	}
	cs, err := c.Comments(ctx, 3)
	if err != nil || len(cs) != 1 || cs[0].ID != 302 || cs[0].Author != "gilliam-bot" {
		t.Fatalf("Comments = %+v, %v (system notes are left out)", cs, err)
	}
	if id, err := c.CreateComment(ctx, 3, "hi"); err != nil || id != 303 {
		t.Fatalf("CreateComment = %d, %v", id, err)
	}
	if err := c.EditComment(ctx, 3, 302, "edited"); err != nil {
		t.Fatal(err)
	}
	if mrs, err := c.OpenPullRequests(ctx); err != nil || !reflect.DeepEqual(mrs, []int{3}) {
		t.Fatalf("OpenPullRequests = %v, %v", mrs, err)
	}
	var limited *RateLimitedError
	if err := c.SetStatus(ctx, Status{Commit: sha, Context: "gilliam/billing", State: Success, Description: "ok"}); !errors.As(err, &limited) || time.Until(limited.Until) < 50*time.Second {
		t.Fatalf("429: %v", err)
	}
	if done() != 10 {
		t.Fatalf("%d requests made, want 10", done())
	}
}

func TestGiteaRequests(t *testing.T) {
	ga := map[string]string{"Authorization": "token gitea-secret"}
	srv, _ := fakeAPI(t, []exchange{
		{method: "POST", uri: "/api/v1/repos/ops/edge/statuses/" + sha, header: ga,
			body: map[string]any{"state": "error", "context": "gilliam/edge", "description": "superseded"}, code: 201, answer: `{"id": 1}`},
		{method: "GET", uri: "/api/v1/repos/ops/edge/issues/2/comments?limit=50&page=1", header: ga, code: 200, answer: `[]`},
	})
	c, err := New(Config{Kind: Gitea, RepoURL: srv.URL + "/ops/edge.git", Token: token("gitea-secret")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetStatus(context.Background(), Status{Commit: sha, Context: "gilliam/edge", State: Error, Description: "superseded"}); err != nil {
		t.Fatal(err)
	}
	if cs, err := c.Comments(context.Background(), 2); err != nil || len(cs) != 0 {
		t.Fatalf("Comments = %v, %v", cs, err)
	}
}

// Configurations that would leak a token, or cannot say where the API is, are refused.
func TestNewRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: GitHub, API: "http://api.example.com", Project: "a/b"},
		{Kind: Gitea, RepoURL: "ssh://git@gitea.example/a/b.git"},
		{Kind: "bitbucket", API: "https://api.example.com", Project: "a/b"},
		{Kind: GitHub, API: "https://api.github.com", Project: "nobody"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	c, err := New(Config{Kind: GitHub, RepoURL: "https://github.com/acme/shop.git"})
	if err != nil || c.(*github).h.base != "https://api.github.com" {
		t.Fatalf("github.com's API: %v", err)
	}
}
