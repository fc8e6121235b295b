package gitwatch_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

func TestPollBranches(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	first := r.Commit(map[string]string{"a": "1"}, "first")
	log, logged := newLogs()
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Branches: []string{"main", "release"}}, log)
	ev := func(kind gitwatch.Kind, ref, old, new string) gitwatch.Event {
		return gitwatch.Event{Repo: r.URL, Ref: ref, Old: old, New: new, Kind: kind}
	}

	wantEvents(t, "first poll", poll(t, w), ev(gitwatch.KindPush, "refs/heads/main", "", first))

	// Nothing moved: one listing, no fetch.
	lists, fetches := s.Count("app", testenv.GitListRefs), s.Count("app", testenv.GitFetch)
	wantEvents(t, "poll with no change", poll(t, w))
	if n := s.Count("app", testenv.GitFetch); n != fetches {
		t.Fatalf("a poll with no change fetched (%d -> %d)", fetches, n)
	}
	if n := s.Count("app", testenv.GitListRefs); n != lists+1 {
		t.Fatalf("a poll with no change made %d listings, want 1", n-lists)
	}

	second := r.Commit(map[string]string{"a": "2"}, "second")
	wantEvents(t, "push", poll(t, w), ev(gitwatch.KindPush, "refs/heads/main", first, second))
	if w.Head("main") != second {
		t.Fatalf("head %s, want %s", w.Head("main"), second)
	}

	// A rewrite: back to the first commit and a new commit on top of it.
	r.ResetHard(first)
	rewritten := r.CommitOn("main", map[string]string{"b": "x"}, "rewrite")
	wantEvents(t, "force-push", poll(t, w), ev(gitwatch.KindForcePush, "refs/heads/main", second, rewritten))
	if got := logged.lines("ref moved", "kind=force-push", "ref=refs/heads/main"); len(got) != 1 {
		t.Fatalf("force-push logged %d times, want once:\n%s", len(got), logged)
	}
	if b, err := w.Repo().ReadFile(rewritten, "b"); err != nil || string(b) != "x" {
		t.Fatalf("the force-pushed commit is not in the cache: %q %v", b, err)
	}

	// A branch appears and is deleted; a branch nobody watches changes nothing.
	r.PushRef("refs/heads/release", first)
	r.PushRef("refs/heads/other", first)
	wantEvents(t, "new branch", poll(t, w), ev(gitwatch.KindPush, "refs/heads/release", "", first))
	r.DeleteRef("refs/heads/release")
	wantEvents(t, "delete", poll(t, w), ev(gitwatch.KindDelete, "refs/heads/release", first, ""))
	wantEvents(t, "after delete", poll(t, w))

	// A new watcher on the same cache (a restart) reports nothing already seen, and not
	// the deleted branch again.
	w2 := watchIn(t, gitwatch.RepoConfig{URL: r.URL, Branches: []string{"main", "release"}}, filepath.Dir(w.Repo().Dir()), nil)
	wantEvents(t, "restart", poll(t, w2))
}

func TestPollTags(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "tags")
	c1 := r.Commit(map[string]string{"a": "1"}, "one")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Tags: []string{"v*"}}, nil)
	ev := func(kind gitwatch.Kind, ref, old, new string) gitwatch.Event {
		return gitwatch.Event{Repo: r.URL, Ref: ref, Old: old, New: new, Kind: kind}
	}
	wantEvents(t, "no tags yet (main is not watched)", poll(t, w))

	r.PushRef("refs/tags/v1", c1)
	r.PushRef("refs/tags/nightly", c1)
	wantEvents(t, "lightweight tag", poll(t, w), ev(gitwatch.KindPush, "refs/tags/v1", "", c1))

	// An annotated tag is reported with its commit, not the tag object.
	c2 := r.Commit(map[string]string{"a": "2"}, "two")
	gitIn(t, r.Work, "tag", "-a", "-m", "release 2", "v2", c2)
	r.PushRef("refs/tags/v2", "v2")
	wantEvents(t, "annotated tag", poll(t, w), ev(gitwatch.KindPush, "refs/tags/v2", "", c2))
	if b, err := w.Repo().ReadFile(w.Head("refs/tags/v2"), "a"); err != nil || string(b) != "2" {
		t.Fatalf("read at the tag: %q %v", b, err)
	}
	wantEvents(t, "annotated tag, no change", poll(t, w))

	// Moving a tag to an unrelated commit is a force-push; deleting it, a delete.
	r.ResetHard(c1)
	other := r.CommitOn("side", map[string]string{"s": "1"}, "side")
	r.PushRef("refs/tags/v1", other)
	wantEvents(t, "tag moved", poll(t, w), ev(gitwatch.KindPush, "refs/tags/v1", c1, other))
	r.PushRef("refs/tags/v1", c2)
	wantEvents(t, "tag moved sideways", poll(t, w), ev(gitwatch.KindForcePush, "refs/tags/v1", other, c2))
	r.DeleteRef("refs/tags/v1")
	wantEvents(t, "tag deleted", poll(t, w), ev(gitwatch.KindDelete, "refs/tags/v1", c2, ""))
}

func TestPollPullRequestRefs(t *testing.T) {
	for _, tc := range []struct {
		forge gitwatch.Forge
		ref   string
	}{
		{gitwatch.GitHub, "refs/pull/7/head"},
		{gitwatch.Gitea, "refs/pull/7/head"},
		{gitwatch.GitLab, "refs/merge-requests/7/head"},
	} {
		t.Run(string(tc.forge), func(t *testing.T) {
			s := testenv.NewGitServer(t)
			r := s.NewRepo(t, "prs")
			base := r.Commit(map[string]string{"a": "1"}, "base")
			w := watch(t, gitwatch.RepoConfig{URL: r.URL, Forge: tc.forge,
				Previews: &gitwatch.Previews{PullRequests: true}}, nil)
			ev := func(kind gitwatch.Kind, ref, old, new string, pr int) gitwatch.Event {
				return gitwatch.Event{Repo: r.URL, Ref: ref, Old: old, New: new, Kind: kind, PR: pr}
			}
			wantEvents(t, "first poll", poll(t, w), ev(gitwatch.KindPush, "refs/heads/main", "", base, 0))

			head := r.CommitOn("feature", map[string]string{"f": "1"}, "feature")
			r.PushRef(tc.ref, head)
			// Refs that look alike but are not pull-request heads are not previews.
			r.PushRef("refs/pull/8/merge", head)
			r.PushRef("refs/merge-requests/x/head", head)
			wantEvents(t, "opened", poll(t, w), ev(gitwatch.KindPROpened, tc.ref, "", head, 7))

			updated := r.CommitOn("feature", map[string]string{"f": "2"}, "more")
			r.PushRef(tc.ref, updated)
			wantEvents(t, "updated", poll(t, w), ev(gitwatch.KindPRUpdated, tc.ref, head, updated, 7))
			r.ResetHard(head)
			rewritten := r.CommitOn("feature", map[string]string{"f": "3"}, "rewrite")
			r.PushRef(tc.ref, rewritten)
			wantEvents(t, "force-pushed", poll(t, w), ev(gitwatch.KindPRUpdated, tc.ref, updated, rewritten, 7))

			r.DeleteRef(tc.ref)
			wantEvents(t, "closed", poll(t, w), ev(gitwatch.KindPRClosed, tc.ref, rewritten, "", 7))
			wantEvents(t, "after close", poll(t, w))
		})
	}
}

func TestPollBranchPreviews(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "previews")
	base := r.Commit(map[string]string{"a": "1"}, "base")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Branches: []string{"main"},
		Previews: &gitwatch.Previews{Branches: []string{"feature/*", "main"}}}, nil)
	ev := func(kind gitwatch.Kind, ref, old, new string) gitwatch.Event {
		return gitwatch.Event{Repo: r.URL, Ref: ref, Old: old, New: new, Kind: kind}
	}
	// main matches a preview pattern too, but it is deployed: it is not a preview.
	wantEvents(t, "first poll", poll(t, w), ev(gitwatch.KindPush, "refs/heads/main", "", base))

	one := r.CommitOn("feature/login", map[string]string{"l": "1"}, "login")
	r.PushRef("refs/heads/feature/deep/er", one) // * does not cross a slash
	r.PushRef("refs/heads/fix", one)
	wantEvents(t, "branch preview opened", poll(t, w), ev(gitwatch.KindPROpened, "refs/heads/feature/login", "", one))
	two := r.CommitOn("feature/login", map[string]string{"l": "2"}, "login 2")
	wantEvents(t, "branch preview updated", poll(t, w), ev(gitwatch.KindPRUpdated, "refs/heads/feature/login", one, two))
	r.DeleteRef("refs/heads/feature/login")
	wantEvents(t, "branch preview closed", poll(t, w), ev(gitwatch.KindPRClosed, "refs/heads/feature/login", two, ""))
}

// An error listing refs is an error: never a repository without branches or pull requests.
func TestListingErrorReportsNothing(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "flaky")
	base := r.Commit(map[string]string{"a": "1"}, "base")
	r.PushRef("refs/pull/1/head", base)
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Forge: gitwatch.GitHub,
		Previews: &gitwatch.Previews{PullRequests: true, Branches: []string{"feature/*"}}}, nil)
	if got := poll(t, w); len(got) != 2 {
		t.Fatalf("first poll: %s", fmtEvents(got))
	}

	hidden := r.Bare + ".away"
	if err := os.Rename(r.Bare, hidden); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		events, err := w.Poll(context.Background())
		if err == nil || len(events) != 0 {
			t.Fatalf("poll of a missing repository: %s, err %v", fmtEvents(events), err)
		}
	}
	if w.Head("main") != base || w.Refs()["refs/pull/1/head"] != base {
		t.Fatalf("a failed poll forgot refs: %v", w.Refs())
	}
	if err := os.Rename(hidden, r.Bare); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, "back", poll(t, w))
}

// A local path works as a URL (gilliam-sync up can follow a repository on the same machine).
func TestPollLocalPath(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "local")
	c1 := r.Commit(map[string]string{"a": "1"}, "one")
	w := watch(t, gitwatch.RepoConfig{URL: r.Bare}, nil)
	wantEvents(t, "local path", poll(t, w), gitwatch.Event{Repo: r.Bare, Ref: "refs/heads/main", New: c1, Kind: gitwatch.KindPush})
	if b, err := w.Repo().ReadFile(c1, "a"); err != nil || string(b) != "1" {
		t.Fatalf("read: %q %v", b, err)
	}
}
