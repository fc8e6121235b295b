package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// Kind is a kind of forge.
type Kind string

const (
	GitHub Kind = "github"
	GitLab Kind = "gitlab"
	Gitea  Kind = "gitea"
)

// State is a commit status's state, in our words; each client maps it to its API's.
type State string

const (
	Pending State = "pending"
	Success State = "success"
	Failure State = "failure"
	// Error is a commit whose roll-out will not finish for another reason than its own
	// fault: a newer commit superseded it.
	Error State = "error"
)

// Status is one commit status: Context names the formation (gilliam/<formation>), so that
// several formations and installations never overwrite each other.
type Status struct {
	Commit      string `json:"commit"`
	Context     string `json:"context"`
	State       State  `json:"state"`
	Description string `json:"description,omitempty"`
	TargetURL   string `json:"target_url,omitempty"`
}

// Comment is a comment on a pull request (a merge request on GitLab).
type Comment struct {
	ID     int64
	Body   string
	Author string
}

// Client is one repository on one forge.
type Client interface {
	// SetStatus posts a commit status.
	SetStatus(ctx context.Context, s Status) error
	// Comments lists a pull request's comments, oldest first.
	Comments(ctx context.Context, pr int) ([]Comment, error)
	CreateComment(ctx context.Context, pr int, body string) (int64, error)
	EditComment(ctx context.Context, pr int, id int64, body string) error
	// Me is the login of the token's user: comments are only ever edited when ours.
	Me(ctx context.Context) (string, error)
	// OpenPullRequests lists the numbers of the pull requests open now.
	OpenPullRequests(ctx context.Context) ([]int, error)
}

// Config says which repository of which forge, and how to authenticate.
type Config struct {
	Kind Kind
	// API is the API's base URL: https://api.github.com, https://gitlab.com/api/v4,
	// https://gitea.example/api/v1. Empty: derived from RepoURL.
	API string
	// Project is owner/name (GitLab: the full path, groups included). Empty: derived
	// from RepoURL.
	Project string
	// RepoURL is the repository's clone URL.
	RepoURL string
	// Token returns the API token; it is called for every request, so a rotated token
	// is picked up at once.
	Token func() (string, error)
	// HTTP is the client requests go through (default: one with a 30 s timeout).
	HTTP *http.Client
}

// New returns the client for cfg's forge.
func New(cfg Config) (Client, error) {
	if cfg.Project == "" || cfg.API == "" {
		api, project, err := fromRepoURL(cfg.Kind, cfg.RepoURL)
		if err != nil {
			return nil, err
		}
		if cfg.API == "" {
			cfg.API = api
		}
		if cfg.Project == "" {
			cfg.Project = project
		}
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	u, err := url.Parse(cfg.API)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("forge api %q: want an http(s) URL", cfg.API)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return nil, fmt.Errorf("forge api %s: a token over plain http would travel in the clear: use https", cfg.API)
	}
	if strings.Count(cfg.Project, "/") < 1 {
		return nil, fmt.Errorf("forge project %q: want owner/name", cfg.Project)
	}
	h := &httpClient{base: strings.TrimRight(cfg.API, "/"), token: cfg.Token, http: cfg.HTTP, kind: cfg.Kind}
	switch cfg.Kind {
	case GitHub:
		return &github{h: h, repo: cfg.Project, pageParam: "per_page", pageSize: 100}, nil
	case Gitea:
		return &github{h: h, repo: cfg.Project, gitea: true, pageParam: "limit", pageSize: 50}, nil
	case GitLab:
		return &gitlab{h: h, project: url.PathEscape(cfg.Project)}, nil
	}
	return nil, fmt.Errorf("forge %q: want github, gitlab or gitea", cfg.Kind)
}

// fromRepoURL derives the API base and project from an https clone URL.
func fromRepoURL(kind Kind, raw string) (api, project string, err error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", "", fmt.Errorf("forge: cannot derive the API from %q: set notify.api_url and notify.project", scrubURL(raw))
	}
	project = strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git")
	root := u.Scheme + "://" + u.Host
	switch kind {
	case GitHub:
		if strings.EqualFold(u.Hostname(), "github.com") {
			return "https://api.github.com", project, nil
		}
		return root + "/api/v3", project, nil // GitHub Enterprise Server
	case GitLab:
		return root + "/api/v4", project, nil
	case Gitea:
		return root + "/api/v1", project, nil
	}
	return "", "", fmt.Errorf("forge %q: want github, gitlab or gitea", kind)
}

func scrubURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	return raw
}

func loopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// httpClient sends JSON requests with the token and turns answers into errors that say
// what to do: RateLimited (wait until), Stalled (a person must fix: 401, 403, 404, 422),
// retryable (anything else).
type httpClient struct {
	base  string
	token func() (string, error)
	http  *http.Client
	kind  Kind
}

// RateLimitedError is an answer saying the forge's rate limit is spent until Until.
type RateLimitedError struct {
	Until time.Time
	Msg   string
}

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("rate limited until %s: %s", e.Until.UTC().Format(time.TimeOnly), e.Msg)
}

// APIError is an answer other than 2xx.
type APIError struct {
	Method, Path string
	Code         int
	Msg          string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Code, e.Msg)
}

// FaultKind: a refused token, a missing repository or a refused body needs a person;
// a server error may pass.
func (e *APIError) FaultKind() fault.Kind {
	switch e.Code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusBadRequest:
		return fault.Stalled
	}
	return fault.Retryable
}

// do sends method path with body as JSON (nil: none) and decodes the answer into out (nil:
// drop it).
func (c *httpClient) do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.doHeader(ctx, method, path, body, out)
	return err
}

func (c *httpClient) doHeader(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gilliam-sync")
	token := ""
	if c.token != nil {
		if token, err = c.token(); err != nil {
			return nil, fault.Stall(fmt.Errorf("forge token: %w", err))
		}
	}
	switch c.kind {
	case GitHub:
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
	case GitLab:
		if token != "" {
			req.Header.Set("PRIVATE-TOKEN", token)
		}
	case Gitea:
		if token != "" {
			req.Header.Set("Authorization", "token "+token)
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL holds no credentials; the error may name it.
		return nil, fmt.Errorf("%s %s: %w", method, path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if until, limited := rateLimited(resp, time.Now()); limited {
		return nil, &RateLimitedError{Until: until, Msg: fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, message(data))}
	}
	if resp.StatusCode/100 != 2 {
		return nil, &APIError{Method: method, Path: path, Code: resp.StatusCode, Msg: message(data)}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// rateLimited reads the rate-limit headers of GitHub (403 or 429 with
// X-RateLimit-Remaining: 0 and X-RateLimit-Reset, or Retry-After for secondary limits),
// GitLab (429, Retry-After or RateLimit-Reset) and Gitea (429).
func rateLimited(resp *http.Response, now time.Time) (time.Time, bool) {
	h := resp.Header
	exhausted := h.Get("X-RateLimit-Remaining") == "0" || h.Get("RateLimit-Remaining") == "0"
	if resp.StatusCode != http.StatusTooManyRequests && !(resp.StatusCode == http.StatusForbidden && (exhausted || h.Get("Retry-After") != "")) {
		return time.Time{}, false
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s >= 0 {
		return now.Add(time.Duration(s) * time.Second), true
	}
	for _, k := range []string{"X-RateLimit-Reset", "RateLimit-Reset"} {
		if s, err := strconv.ParseInt(h.Get(k), 10, 64); err == nil && s > 0 {
			if t := time.Unix(s, 0); t.After(now) {
				return t, true
			}
		}
	}
	return now.Add(time.Minute), true // no header: a minute, as GitHub's documentation advises
}

// message is the API's error message, short, or the body's start.
func message(data []byte) string {
	var m struct {
		Message any    `json:"message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(data, &m) == nil {
		if s := fmt.Sprint(m.Message); m.Message != nil && s != "" {
			return truncate(s, 200)
		}
		if m.Error != "" {
			return truncate(m.Error, 200)
		}
	}
	return truncate(strings.TrimSpace(string(data)), 200)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
