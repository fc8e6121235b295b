package gitwatch_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// forgeHook builds hooks the way one forge sends them.
type forgeHook struct {
	forge  gitwatch.Forge
	secret string
}

// push is a push hook's payload naming the repository at cloneURL. Its "after" is a lie:
// the payload is a hint and must never be what gets deployed.
func (f forgeHook) push(cloneURL string) []byte {
	var p map[string]any
	switch f.forge {
	case gitwatch.GitLab:
		p = map[string]any{"object_kind": "push", "after": strings.Repeat("d", 40), "project": map[string]any{"git_http_url": cloneURL, "web_url": "https://example.invalid/x"}}
	default:
		p = map[string]any{"ref": "refs/heads/main", "after": strings.Repeat("d", 40), "repository": map[string]any{"clone_url": cloneURL, "html_url": "https://example.invalid/x"}}
	}
	b, _ := json.Marshal(p)
	return b
}

// prHook is what a pull-request hook says.
type prHook struct {
	n      int
	action string // opened, synchronize (pushed to), closed (merged or not) or reopened
	merged bool
	head   string    // the head commit
	at     time.Time // the pull request's updated_at
	fork   bool      // the head is in another repository
}

// pr is a pull-request hook's payload, shaped as the forge sends it.
func (f forgeHook) pr(cloneURL string, h prHook) []byte {
	var p map[string]any
	switch f.forge {
	case gitwatch.GitLab:
		a := map[string]string{"opened": "open", "synchronize": "update", "closed": "close", "reopened": "reopen"}[h.action]
		if h.merged {
			a = "merge"
		}
		source := 42
		if h.fork {
			source = 77
		}
		p = map[string]any{"object_kind": "merge_request", "project": map[string]any{"git_http_url": cloneURL},
			"object_attributes": map[string]any{"iid": h.n, "action": a, "source_project_id": source, "target_project_id": 42,
				"updated_at": h.at.UTC().Format("2006-01-02 15:04:05 UTC"), "last_commit": map[string]any{"id": h.head}}}
	default:
		head := map[string]any{"id": 1, "full_name": "acme/app"}
		if h.fork {
			head = map[string]any{"id": 2, "full_name": "mallory/app"}
		}
		p = map[string]any{"action": h.action, "number": h.n, "repository": map[string]any{"clone_url": cloneURL},
			"pull_request": map[string]any{"number": h.n, "merged": h.merged, "updated_at": h.at.UTC().Format(time.RFC3339),
				"head": map[string]any{"sha": h.head, "repo": head}, "base": map[string]any{"repo": map[string]any{"id": 1, "full_name": "acme/app"}}}}
	}
	b, _ := json.Marshal(p)
	return b
}

// headers signs body as the forge would, for an event of kind push or pr.
func (f forgeHook) headers(body []byte, kind string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	id := make([]byte, 16)
	rand.Read(id)
	mac := hmac.New(sha256.New, []byte(f.secret))
	mac.Write(body)
	sig := hex.EncodeToString(mac.Sum(nil))
	switch f.forge {
	case gitwatch.GitHub:
		h.Set("X-GitHub-Event", map[string]string{"push": "push", "pr": "pull_request"}[kind])
		h.Set("X-GitHub-Delivery", hex.EncodeToString(id))
		h.Set("X-Hub-Signature-256", "sha256="+sig)
	case gitwatch.Gitea:
		h.Set("X-Gitea-Event", map[string]string{"push": "push", "pr": "pull_request"}[kind])
		h.Set("X-Gitea-Delivery", hex.EncodeToString(id))
		h.Set("X-Gitea-Signature", sig)
	case gitwatch.GitLab:
		h.Set("X-Gitlab-Event", map[string]string{"push": "Push Hook", "pr": "Merge Request Hook"}[kind])
		h.Set("X-Gitlab-Event-UUID", hex.EncodeToString(id))
		h.Set("X-Gitlab-Token", f.secret)
	}
	return h
}

func send(t testing.TB, base string, forge gitwatch.Forge, body []byte, h http.Header) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/hooks/"+string(forge), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

var forges = []gitwatch.Forge{gitwatch.GitHub, gitwatch.GitLab, gitwatch.Gitea}

// hookedRepo is a repository on a git server, watched with a webhook, and the receiver.
type hookedRepo struct {
	git   *testenv.GitServer
	repo  *testenv.GitRepo
	w     *gitwatch.Watcher
	hooks *httptest.Server
	f     forgeHook
}

func newHookedRepo(t testing.TB, forge gitwatch.Forge, name string, previews bool) *hookedRepo {
	t.Helper()
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, name)
	secret := "hook-secret-" + string(forge)
	cfg := gitwatch.RepoConfig{URL: r.URL, Forge: forge, PollInterval: time.Hour,
		Webhook: &gitwatch.Webhook{SecretFile: writeSecret(t, secret)}}
	if previews {
		cfg.Previews = &gitwatch.Previews{PullRequests: true}
	}
	w := watch(t, cfg, nil)
	srv := httptest.NewServer(gitwatch.NewWebhooks([]*gitwatch.Watcher{w}, nil))
	t.Cleanup(srv.Close)
	return &hookedRepo{git: s, repo: r, w: w, hooks: srv, f: forgeHook{forge: forge, secret: secret}}
}

func (h *hookedRepo) run(t testing.TB) <-chan gitwatch.Event {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan gitwatch.Event, 100)
	done := make(chan struct{})
	go func() { h.w.Run(ctx, out); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func next(t testing.TB, out <-chan gitwatch.Event, what string) gitwatch.Event {
	t.Helper()
	select {
	case e := <-out:
		return e
	case <-time.After(20 * time.Second):
		t.Fatalf("no event: %s", what)
		return gitwatch.Event{}
	}
}

// A valid hook makes the watcher poll at once (its own interval is an hour); a refused one
// does nothing at all.
func TestWebhooks(t *testing.T) {
	for _, forge := range forges {
		t.Run(string(forge), func(t *testing.T) {
			h := newHookedRepo(t, forge, "app", false)
			c1 := h.repo.Commit(map[string]string{"a": "1"}, "one")
			out := h.run(t)
			if e := next(t, out, "first poll"); e.New != c1 {
				t.Fatalf("first poll: %+v", e)
			}

			c2 := h.repo.Commit(map[string]string{"a": "2"}, "two")
			body := h.f.push(h.repo.URL)
			valid := h.f.headers(body, "push")
			if code := send(t, h.hooks.URL, forge, body, valid); code != http.StatusAccepted {
				t.Fatalf("valid hook: %d", code)
			}
			e := next(t, out, "after a valid hook")
			if e.Kind != gitwatch.KindPush || e.Old != c1 || e.New != c2 {
				t.Fatalf("after a valid hook: %+v (the payload's commit is a hint, not what is deployed)", e)
			}
			// The same delivery again (a forge's redelivery) is harmless and accepted.
			if code := send(t, h.hooks.URL, forge, body, valid); code != http.StatusAccepted {
				t.Fatalf("redelivery: %d", code)
			}

			wrong := forgeHook{forge: forge, secret: "not-the-secret"}
			missing := h.f.headers(body, "push")
			for _, k := range []string{"X-Hub-Signature-256", "X-Gitea-Signature", "X-Gitlab-Token"} {
				missing.Del(k)
			}
			altered := bytes.Replace(body, []byte(`"after":"dddd`), []byte(`"after":"eeee`), 1)
			other := h.f.push("http://127.0.0.1:1/someone-else.git")
			oversize := append(h.f.push(h.repo.URL), bytes.Repeat([]byte(" "), gitwatch.DefaultWebhookLimit)...)
			settle(t, func() int { return h.git.Count("app", testenv.GitListRefs) }) // the redelivery's poll
			lists := h.git.Count("app", testenv.GitListRefs)
			for _, tc := range []struct {
				name string
				body []byte
				h    http.Header
				want int
			}{
				{"missing signature", body, missing, http.StatusUnauthorized},
				{"wrong secret", body, wrong.headers(body, "push"), http.StatusUnauthorized},
				{"replayed with an altered body", altered, valid, http.StatusUnauthorized},
				{"oversize", oversize, h.f.headers(oversize, "push"), http.StatusRequestEntityTooLarge},
				{"unknown repository", other, h.f.headers(other, "push"), http.StatusUnauthorized},
				{"not JSON", []byte("{"), h.f.headers([]byte("{"), "push"), http.StatusBadRequest},
			} {
				if code := send(t, h.hooks.URL, forge, tc.body, tc.h); code != tc.want {
					t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
				}
			}
			for _, other := range forges {
				if other != forge {
					if code := send(t, h.hooks.URL, other, body, forgeHook{forge: other, secret: h.f.secret}.headers(body, "push")); code != http.StatusUnauthorized {
						t.Errorf("a %s hook for a %s repository: %d, want 401", other, forge, code)
					}
				}
			}
			if resp, err := http.Get(h.hooks.URL + "/hooks/" + string(forge)); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("GET: %v %v", resp, err)
			}
			if code := send(t, h.hooks.URL, "bitbucket", body, valid); code != http.StatusNotFound {
				t.Errorf("unknown forge: %d", code)
			}
			if n := h.git.Count("app", testenv.GitListRefs); n != lists {
				t.Errorf("refused hooks made %d listings", n-lists)
			}
			if code := send(t, h.hooks.URL, forge, altered, withFreshID(h.f.headers(body, "push"))); code != alteredFresh(forge) {
				t.Errorf("altered body, fresh delivery id: %d, want %d", code, alteredFresh(forge))
			}
		})
	}
}

func withFreshID(h http.Header) http.Header {
	for _, k := range []string{"X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gitlab-Event-UUID"} {
		if h.Get(k) != "" {
			h.Set(k, h.Get(k)+"-fresh")
		}
	}
	return h
}

// alteredFresh is the answer to a hook whose body was altered and whose delivery id is
// new. GitHub and Gitea sign the body: refused. GitLab's token does not sign it, so only a
// reused delivery id gives the alteration away; with a fresh one the hook passes, which
// is why a payload is only ever a hint (docs/gitwatch.md says so).
func alteredFresh(forge gitwatch.Forge) int {
	if forge == gitwatch.GitLab {
		return http.StatusAccepted
	}
	return http.StatusUnauthorized
}

// GitHub may send the payload as a form field; the signature covers the raw form body.
func TestWebhookFormEncoded(t *testing.T) {
	h := newHookedRepo(t, gitwatch.GitHub, "form", false)
	body := []byte("payload=" + url.QueryEscape(string(h.f.push(h.repo.URL))))
	hdr := h.f.headers(body, "push")
	hdr.Set("Content-Type", "application/x-www-form-urlencoded")
	if code := send(t, h.hooks.URL, gitwatch.GitHub, body, hdr); code != http.StatusAccepted {
		t.Fatalf("form hook: %d", code)
	}
	select {
	case <-h.w.Triggered():
	default:
		t.Fatal("a valid form hook did not ask for a poll")
	}
}

// A burst of 100 hooks for one repository coalesces: one event, at most 2 fetches.
func TestWebhookBurst(t *testing.T) {
	h := newHookedRepo(t, gitwatch.GitHub, "burst", false)
	c1 := h.repo.Commit(map[string]string{"a": "1"}, "one")
	out := h.run(t)
	if e := next(t, out, "first poll"); e.New != c1 {
		t.Fatalf("first poll: %+v", e)
	}
	c2 := h.repo.Commit(map[string]string{"a": "2"}, "two")
	fetches, lists := h.git.Count("burst", testenv.GitFetch), h.git.Count("burst", testenv.GitListRefs)

	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			body := h.f.push(h.repo.URL)
			if code := send(t, h.hooks.URL, gitwatch.GitHub, body, h.f.headers(body, "push")); code != http.StatusAccepted {
				t.Errorf("hook: %d", code)
			}
		})
	}
	wg.Wait()
	if e := next(t, out, "after the burst"); e.New != c2 {
		t.Fatalf("after the burst: %+v", e)
	}
	// Let a poll still pending from the burst finish: the listing count settles.
	settle(t, func() int { return h.git.Count("burst", testenv.GitListRefs) })
	if len(out) != 0 {
		t.Fatalf("more events: %+v", <-out)
	}
	f := h.git.Count("burst", testenv.GitFetch) - fetches
	if f > 2 {
		t.Fatalf("100 hooks caused %d fetches", f)
	}
	t.Logf("100 hooks: %d fetch(es), %d listing(s)", f, h.git.Count("burst", testenv.GitListRefs)-lists)
}

// settle waits until count stops changing for half a second.
func settle(t testing.TB, count func() int) {
	t.Helper()
	last, since := count(), time.Now()
	testenv.Eventually(t, 20*time.Second, "requests to settle", func() bool {
		if n := count(); n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) > 500*time.Millisecond
	})
}

// Pull-request hooks are hints, confirmed against the listing: a close of a listed pull
// request (whose ref GitHub and Gitea keep) closes its preview; a close or an open of a
// pull request the listing does not show changes nothing.
func TestWebhookPullRequestHints(t *testing.T) {
	for _, forge := range forges {
		t.Run(string(forge), func(t *testing.T) {
			h := newHookedRepo(t, forge, "prs", true)
			base := h.repo.Commit(map[string]string{"a": "1"}, "base")
			ref := map[gitwatch.Forge]string{gitwatch.GitLab: "refs/merge-requests/5/head"}[forge]
			if ref == "" {
				ref = "refs/pull/5/head"
			}
			head := h.repo.CommitOn("feature", map[string]string{"f": "1"}, "feature")
			h.repo.PushRef(ref, head)
			ev := func(kind gitwatch.Kind, old, new string) gitwatch.Event {
				return gitwatch.Event{Repo: h.repo.URL, Ref: ref, Old: old, New: new, Kind: kind, PR: 5, Origin: h.w.Origin(5)}
			}
			clock := time.Now()
			hook := func(n int, action string, merged bool, head string) {
				t.Helper()
				clock = clock.Add(time.Second)
				body := h.f.pr(h.repo.URL, prHook{n: n, action: action, merged: merged, head: head, at: clock})
				if code := send(t, h.hooks.URL, forge, body, h.f.headers(body, "pr")); code != http.StatusAccepted {
					t.Fatalf("%s hook: %d", action, code)
				}
			}
			wantEvents(t, "first poll", poll(t, h.w),
				gitwatch.Event{Repo: h.repo.URL, Ref: "refs/heads/main", New: base, Kind: gitwatch.KindPush}, ev(gitwatch.KindPROpened, "", head))

			hook(99, "opened", false, head) // not in the listing: nothing opens
			hook(98, "closed", false, head) // never seen: nothing closes
			wantEvents(t, "hints about pull requests the listing does not show", poll(t, h.w))

			hook(5, "closed", false, base) // a head the listing does not show: nothing closes
			wantEvents(t, "close of another head", poll(t, h.w))
			hook(5, "closed", forge != gitwatch.Gitea, head) // merged on GitHub and GitLab, closed on Gitea
			wantEvents(t, "closed by hook, ref kept", poll(t, h.w), ev(gitwatch.KindPRClosed, head, ""))
			wantEvents(t, "still closed", poll(t, h.w))

			hook(5, "reopened", false, head)
			wantEvents(t, "reopened", poll(t, h.w), ev(gitwatch.KindPROpened, "", head))

			hook(5, "closed", false, head)
			wantEvents(t, "closed again", poll(t, h.w), ev(gitwatch.KindPRClosed, head, ""))
			// Pushed to after closing: the forge reopened it.
			more := h.repo.CommitOn("feature", map[string]string{"f": "2"}, "more")
			h.repo.PushRef(ref, more)
			wantEvents(t, "pushed after close", poll(t, h.w), ev(gitwatch.KindPROpened, "", more))

			// A hint waits for a poll that succeeds: with the repository unreachable, no
			// pr-closed; once it is back, the close is confirmed.
			hook(5, "closed", false, more)
			hidden := h.repo.Bare + ".away"
			if err := os.Rename(h.repo.Bare, hidden); err != nil {
				t.Fatal(err)
			}
			if events, err := h.w.Poll(context.Background()); err == nil || len(events) != 0 {
				t.Fatalf("poll of an unreachable repository: %s, %v", fmtEvents(events), err)
			}
			if err := os.Rename(hidden, h.repo.Bare); err != nil {
				t.Fatal(err)
			}
			wantEvents(t, "close confirmed", poll(t, h.w), ev(gitwatch.KindPRClosed, more, ""))
			h.repo.DeleteRef(ref)
			wantEvents(t, "closed ref deleted", poll(t, h.w))
		})
	}
}

// The receiver answers at once even while the repository's poll hangs on a server that
// does not answer: the poll runs in the watcher, not in the request.
func TestWebhookAnswersWhilePollHangs(t *testing.T) {
	release, asked := make(chan struct{}), make(chan struct{}, 1)
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case asked <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(release) })
	repoURL := hanging.URL + "/app.git"
	w := watch(t, gitwatch.RepoConfig{URL: repoURL, Forge: gitwatch.Gitea, PollInterval: time.Hour,
		Webhook: &gitwatch.Webhook{SecretFile: writeSecret(t, "s")}}, nil)
	srv := httptest.NewServer(gitwatch.NewWebhooks([]*gitwatch.Watcher{w}, nil))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx, make(chan gitwatch.Event)); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	select {
	case <-asked: // the poll is now hanging
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher never polled")
	}
	f := forgeHook{forge: gitwatch.Gitea, secret: "s"}
	for i := range 3 {
		body := f.push(repoURL)
		if code := send(t, srv.URL, gitwatch.Gitea, body, f.headers(body, "push")); code != http.StatusAccepted {
			t.Fatalf("hook %d while the poll hangs: %d", i, code)
		}
	}
}

// A captured close hook replayed after the pull request was reopened closes nothing: the
// reopen was newer. Neither does a close naming a head the listing does not show, nor a
// hook whose time cannot be read.
func TestWebhookPullRequestReplay(t *testing.T) {
	for _, forge := range forges {
		t.Run(string(forge), func(t *testing.T) {
			h := newHookedRepo(t, forge, "replay", true)
			h.repo.Commit(map[string]string{"a": "1"}, "base")
			ref := "refs/pull/3/head"
			if forge == gitwatch.GitLab {
				ref = "refs/merge-requests/3/head"
			}
			head := h.repo.CommitOn("feature", map[string]string{"f": "1"}, "feature")
			h.repo.PushRef(ref, head)
			poll(t, h.w)
			send1 := func(body []byte, hdr http.Header) {
				t.Helper()
				if code := send(t, h.hooks.URL, forge, body, hdr); code != http.StatusAccepted {
					t.Fatalf("hook: %d", code)
				}
			}
			t0 := time.Now()
			closeBody := h.f.pr(h.repo.URL, prHook{n: 3, action: "closed", head: head, at: t0})
			closeHdr := h.f.headers(closeBody, "pr")
			send1(closeBody, closeHdr)
			wantEvents(t, "closed", poll(t, h.w), gitwatch.Event{Repo: h.repo.URL, Ref: ref, Old: head, Kind: gitwatch.KindPRClosed, PR: 3, Origin: gitwatch.OriginSame})
			reopen := h.f.pr(h.repo.URL, prHook{n: 3, action: "reopened", head: head, at: t0.Add(time.Minute)})
			send1(reopen, h.f.headers(reopen, "pr"))
			wantEvents(t, "reopened", poll(t, h.w), gitwatch.Event{Repo: h.repo.URL, Ref: ref, New: head, Kind: gitwatch.KindPROpened, PR: 3, Origin: gitwatch.OriginSame})

			send1(closeBody, closeHdr)              // the same delivery again
			send1(closeBody, withFreshID(closeHdr)) // or under a new delivery id
			wantEvents(t, "replayed close", poll(t, h.w))
			undated := bytes.ReplaceAll(closeBody, []byte(t0.UTC().Format(time.RFC3339)), []byte("yesterday"))
			undated = bytes.ReplaceAll(undated, []byte(t0.UTC().Format("2006-01-02 15:04:05 UTC")), []byte("yesterday"))
			send1(undated, h.f.headers(undated, "pr"))
			wantEvents(t, "close without a readable time", poll(t, h.w))
		})
	}
}

// Previews are the watch list's decision: a pull request gets one when its head is in the
// repository itself (as a signed hook said), or when forks are allowed; a fork, or a pull
// request no hook told about, does not.
func TestPreviewPolicy(t *testing.T) {
	for _, forge := range forges {
		t.Run(string(forge), func(t *testing.T) {
			h := newHookedRepo(t, forge, "policy", true)
			h.repo.Commit(map[string]string{"a": "1"}, "base")
			prRef := func(n int) string {
				if forge == gitwatch.GitLab {
					return fmt.Sprintf("refs/merge-requests/%d/head", n)
				}
				return fmt.Sprintf("refs/pull/%d/head", n)
			}
			head := h.repo.CommitOn("feature", map[string]string{"f": "1"}, "feature")
			for n := 1; n <= 3; n++ {
				h.repo.PushRef(prRef(n), head)
			}
			for n, fork := range map[int]bool{1: false, 2: true} {
				body := h.f.pr(h.repo.URL, prHook{n: n, action: "opened", head: head, at: time.Now(), fork: fork})
				if code := send(t, h.hooks.URL, forge, body, h.f.headers(body, "pr")); code != http.StatusAccepted {
					t.Fatalf("hook: %d", code)
				}
			}
			origins := map[string]gitwatch.Origin{}
			for _, e := range poll(t, h.w) {
				origins[e.Ref] = e.Origin
			}
			want := map[string]gitwatch.Origin{"refs/heads/main": "", prRef(1): gitwatch.OriginSame, prRef(2): gitwatch.OriginFork, prRef(3): gitwatch.OriginUnknown}
			if !maps.Equal(origins, want) {
				t.Fatalf("origins in events: %v, want %v", origins, want)
			}
			for ref, allowed := range map[string]bool{prRef(1): true, prRef(2): false, prRef(3): false, "refs/heads/main": false} {
				ok, why := h.w.PreviewAllowed(ref)
				if ok != allowed || (!ok && why == "") {
					t.Errorf("PreviewAllowed(%s) = %v %q, want %v", ref, ok, why, allowed)
				}
				t.Logf("%s: %v %s", ref, ok, why)
			}
			// With previews.forks, every pull request may.
			cfg := h.w.Config()
			cfg.Previews.Forks = true
			w := watch(t, cfg, nil)
			if ok, why := w.PreviewAllowed(prRef(3)); !ok {
				t.Errorf("with forks on: %s", why)
			}
		})
	}
	// Branch previews are the operator's patterns, allowed as listed.
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "branches")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Previews: &gitwatch.Previews{Branches: []string{"feature/*"}}}, nil)
	if ok, why := w.PreviewAllowed("refs/heads/feature/x"); !ok {
		t.Errorf("branch preview: %s", why)
	}
	if ok, _ := w.PreviewAllowed("refs/heads/other"); ok {
		t.Error("a branch not listed may be previewed")
	}
}
