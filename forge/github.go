package forge

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
)

// github is the GitHub REST API, and Gitea's, which follows it for everything used here
// (statuses, issue comments, pull requests); they differ in the authorization header
// (client.go), the page size parameter and the states a status may take.
type github struct {
	h         *httpClient
	repo      string // owner/name
	gitea     bool
	pageParam string
	pageSize  int
}

// maxPages bounds a listing: 100 pages of comments or pull requests.
const maxPages = 100

func (g *github) path(format string, args ...any) string {
	owner, name, _ := cut(g.repo)
	return "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + fmt.Sprintf(format, args...)
}

func cut(repo string) (string, string, bool) {
	for i := len(repo) - 1; i >= 0; i-- {
		if repo[i] == '/' {
			return repo[:i], repo[i+1:], true
		}
	}
	return repo, "", false
}

func (g *github) SetStatus(ctx context.Context, s Status) error {
	state := string(s.State)
	body := map[string]string{"state": state, "context": s.Context, "description": truncate(s.Description, 140)}
	if s.TargetURL != "" {
		body["target_url"] = s.TargetURL
	}
	return g.h.do(ctx, "POST", g.path("/statuses/%s", url.PathEscape(s.Commit)), body, nil)
}

type ghComment struct {
	ID   int64  `json:"id"`
	Body string `json:"body"`
	User struct {
		Login string `json:"login"`
	} `json:"user"`
}

func (g *github) page(n int) string {
	return "?" + g.pageParam + "=" + strconv.Itoa(g.pageSize) + "&page=" + strconv.Itoa(n)
}

func (g *github) Comments(ctx context.Context, pr int) ([]Comment, error) {
	var out []Comment
	for p := 1; p <= maxPages; p++ {
		var page []ghComment
		if err := g.h.do(ctx, "GET", g.path("/issues/%d/comments", pr)+g.page(p), nil, &page); err != nil {
			return nil, err
		}
		for _, c := range page {
			out = append(out, Comment{ID: c.ID, Body: c.Body, Author: c.User.Login})
		}
		if len(page) < g.pageSize {
			break
		}
	}
	return out, nil
}

func (g *github) CreateComment(ctx context.Context, pr int, body string) (int64, error) {
	var c ghComment
	err := g.h.do(ctx, "POST", g.path("/issues/%d/comments", pr), map[string]string{"body": body}, &c)
	return c.ID, err
}

func (g *github) EditComment(ctx context.Context, pr int, id int64, body string) error {
	return g.h.do(ctx, "PATCH", g.path("/issues/comments/%d", id), map[string]string{"body": body}, nil)
}

func (g *github) Me(ctx context.Context) (string, error) {
	var u struct {
		Login string `json:"login"`
	}
	err := g.h.do(ctx, "GET", "/user", nil, &u)
	return u.Login, err
}

func (g *github) OpenPullRequests(ctx context.Context) ([]int, error) {
	var out []int
	for p := 1; p <= maxPages; p++ {
		var page []struct {
			Number int `json:"number"`
		}
		if err := g.h.do(ctx, "GET", g.path("/pulls")+g.page(p)+"&state=open", nil, &page); err != nil {
			return nil, err
		}
		for _, pr := range page {
			out = append(out, pr.Number)
		}
		if len(page) < g.pageSize {
			break
		}
	}
	return out, nil
}
