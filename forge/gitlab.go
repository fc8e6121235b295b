package forge

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// gitlab is GitLab's REST API (v4): commit statuses, merge request notes and merge
// requests. project is the project's path, already escaped (group%2Fname).
type gitlab struct {
	h       *httpClient
	project string
}

const gitlabPage = 100

func (g *gitlab) path(format string, args ...any) string {
	return "/projects/" + g.project + fmt.Sprintf(format, args...)
}

// SetStatus maps our states to GitLab's (pending, running, success, failed, canceled). GitLab
// refuses a status in the state it already has ("Cannot transition status via :run from
// :running"): that answer means the status says it already.
func (g *gitlab) SetStatus(ctx context.Context, s Status) error {
	state := map[State]string{Pending: "running", Success: "success", Failure: "failed", Error: "canceled"}[s.State]
	body := map[string]string{"state": state, "name": s.Context, "description": truncate(s.Description, 140)}
	if s.TargetURL != "" {
		body["target_url"] = s.TargetURL
	}
	err := g.h.do(ctx, "POST", g.path("/statuses/%s", s.Commit), body, nil)
	if e, ok := err.(*APIError); ok && e.Code == 400 && strings.Contains(e.Msg, "Cannot transition status") {
		return nil
	}
	return err
}

type glNote struct {
	ID     int64  `json:"id"`
	Body   string `json:"body"`
	System bool   `json:"system"`
	Author struct {
		Username string `json:"username"`
	} `json:"author"`
}

func (g *gitlab) Comments(ctx context.Context, pr int) ([]Comment, error) {
	var out []Comment
	for p := 1; p <= maxPages; p++ {
		var page []glNote
		q := "?sort=asc&order_by=created_at&per_page=" + strconv.Itoa(gitlabPage) + "&page=" + strconv.Itoa(p)
		if err := g.h.do(ctx, "GET", g.path("/merge_requests/%d/notes", pr)+q, nil, &page); err != nil {
			return nil, err
		}
		for _, n := range page {
			if !n.System {
				out = append(out, Comment{ID: n.ID, Body: n.Body, Author: n.Author.Username})
			}
		}
		if len(page) < gitlabPage {
			break
		}
	}
	return out, nil
}

func (g *gitlab) CreateComment(ctx context.Context, pr int, body string) (int64, error) {
	var n glNote
	err := g.h.do(ctx, "POST", g.path("/merge_requests/%d/notes", pr), map[string]string{"body": body}, &n)
	return n.ID, err
}

func (g *gitlab) EditComment(ctx context.Context, pr int, id int64, body string) error {
	return g.h.do(ctx, "PUT", g.path("/merge_requests/%d/notes/%d", pr, id), map[string]string{"body": body}, nil)
}

func (g *gitlab) Me(ctx context.Context) (string, error) {
	var u struct {
		Username string `json:"username"`
	}
	err := g.h.do(ctx, "GET", "/user", nil, &u)
	return u.Username, err
}

func (g *gitlab) OpenPullRequests(ctx context.Context) ([]int, error) {
	var out []int
	for p := 1; p <= maxPages; p++ {
		var page []struct {
			IID int `json:"iid"`
		}
		q := "?state=opened&per_page=" + strconv.Itoa(gitlabPage) + "&page=" + strconv.Itoa(p)
		if err := g.h.do(ctx, "GET", g.path("/merge_requests")+q, nil, &page); err != nil {
			return nil, err
		}
		for _, mr := range page {
			out = append(out, mr.IID)
		}
		if len(page) < gitlabPage {
			break
		}
	}
	return out, nil
}
