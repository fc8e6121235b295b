package gitwatch

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
)

// DefaultWebhookLimit is the largest webhook body accepted by default. Forges trim push
// payloads to a few dozen commits, so real hooks stay far below it.
const DefaultWebhookLimit = 1 << 20

// rememberedDeliveries is how many delivery ids Webhooks keeps to refuse replays.
const rememberedDeliveries = 4096

// Webhooks receives the hooks of GitHub, GitLab and Gitea on POST /hooks/github,
// /hooks/gitlab and /hooks/gitea, and turns each valid one into an immediate poll of its
// repository. The payload is a hint, never trusted as the commit to deploy: what gets
// deployed is what the poll finds. It answers at once (202); the poll runs in the
// watcher's Run, and hooks that arrive while one is pending coalesce into it.
//
// Answers: 405 for anything but POST, 404 for an unknown forge path, 413 for a body over
// Limit, 400 for a body that is not a hook, 401 for a missing or wrong signature, for a
// repository not watched with a webhook for that forge (the same status and body: the
// receiver does not tell who is watched), and for a delivery id seen before with a
// different body.
type Webhooks struct {
	// Limit is the largest body accepted, in bytes; 0 means DefaultWebhookLimit.
	Limit int64
	// Metrics counts deliveries by forge and result (nil: none).
	Metrics *metrics.Metrics

	log   *slog.Logger
	repos map[string][]*Watcher // repoKey -> watchers with a webhook

	mu         sync.Mutex
	deliveries map[string][sha256.Size]byte // forge+delivery id -> digest of its body
	order      []string                     // delivery keys, oldest first
}

var _ http.Handler = (*Webhooks)(nil)

// NewWebhooks routes hooks to the watchers whose configuration has a webhook.
func NewWebhooks(watchers []*Watcher, log *slog.Logger) *Webhooks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Webhooks{log: log, repos: map[string][]*Watcher{}, deliveries: map[string][sha256.Size]byte{}}
	for _, w := range watchers {
		if w.cfg.Webhook == nil {
			continue
		}
		if key := repoKey(w.cfg.URL); key != "" {
			h.repos[key] = append(h.repos[key], w)
		}
	}
	return h
}

// hook is what a forge's payload tells us, all of it unverified until the signature is.
type hook struct {
	Repository struct {
		CloneURL   string `json:"clone_url"`
		SSHURL     string `json:"ssh_url"`
		HTMLURL    string `json:"html_url"`
		GitURL     string `json:"git_url"`
		URL        string `json:"url"`
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
		Homepage   string `json:"homepage"`
	} `json:"repository"`
	Project struct { // GitLab
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
		WebURL     string `json:"web_url"`
	} `json:"project"`
	Action      string `json:"action"` // GitHub, Gitea
	Number      int    `json:"number"`
	PullRequest struct {
		UpdatedAt string `json:"updated_at"`
		Head      struct {
			SHA  string    `json:"sha"`
			Repo *hookRepo `json:"repo"` // null when the fork was deleted
		} `json:"head"`
		Base struct {
			Repo *hookRepo `json:"repo"`
		} `json:"base"`
	} `json:"pull_request"`
	// GitLab merge requests.
	ObjectKind       string `json:"object_kind"`
	ObjectAttributes struct {
		IID             int    `json:"iid"`
		Action          string `json:"action"`
		SourceProjectID int64  `json:"source_project_id"`
		TargetProjectID int64  `json:"target_project_id"`
		UpdatedAt       string `json:"updated_at"`
		LastCommit      struct {
			ID string `json:"id"`
		} `json:"last_commit"`
	} `json:"object_attributes"`
}

type hookRepo struct {
	ID       int64  `json:"id"`
	FullName string `json:"full_name"`
}

func (p *hook) urls() []string {
	r := p.Repository
	return []string{r.CloneURL, r.SSHURL, r.HTMLURL, r.GitURL, r.URL, r.GitHTTPURL, r.GitSSHURL, r.Homepage,
		p.Project.GitHTTPURL, p.Project.GitSSHURL, p.Project.WebURL}
}

// pullRequest is the pull request a pull-request hook is about (0 for other hooks), where
// its head comes from, and, when the hook says it closed, merged or reopened, that hint.
func (p *hook) pullRequest(forge Forge, event string) (n int, origin Origin, h *hint) {
	var action, head, updated string
	switch forge {
	case GitHub, Gitea:
		if event != "pull_request" {
			return 0, OriginUnknown, nil
		}
		pr := p.PullRequest
		n, head, updated = p.Number, pr.Head.SHA, pr.UpdatedAt
		switch hr, br := pr.Head.Repo, pr.Base.Repo; {
		case hr == nil || br == nil: // the head's repository was deleted: unknown
		case hr.ID != 0 && br.ID != 0:
			origin = map[bool]Origin{true: OriginSame, false: OriginFork}[hr.ID == br.ID]
		case hr.FullName != "" && br.FullName != "":
			origin = map[bool]Origin{true: OriginSame, false: OriginFork}[strings.EqualFold(hr.FullName, br.FullName)]
		}
		switch p.Action {
		case "closed":
			action = "close"
		case "reopened":
			action = "reopen"
		}
	case GitLab:
		if p.ObjectKind != "merge_request" {
			return 0, OriginUnknown, nil
		}
		a := p.ObjectAttributes
		n, head, updated = a.IID, a.LastCommit.ID, a.UpdatedAt
		switch {
		case a.SourceProjectID == 0 || a.TargetProjectID == 0:
		case a.SourceProjectID != a.TargetProjectID:
			origin = OriginFork
		default:
			origin = OriginSame
		}
		switch a.Action {
		case "close", "merge":
			action = "close"
		case "reopen":
			action = "reopen"
		}
	}
	if action != "" {
		h = &hint{closed: action == "close", head: head, at: hookTime(updated)}
	}
	return n, origin, h
}

// hookTime parses a payload's updated_at: RFC 3339 (GitHub, Gitea, recent GitLab) or
// GitLab's "2006-01-02 15:04:05 UTC". Zero when it is neither.
func hookTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05 MST", "2006-01-02 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func (h *Webhooks) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if h.Metrics == nil {
		h.serve(rw, r)
		return
	}
	sw := &statusWriter{ResponseWriter: rw}
	h.serve(sw, r)
	forge := Forge(strings.TrimPrefix(r.URL.Path, "/hooks/"))
	switch forge {
	case GitHub, GitLab, Gitea:
	default:
		forge = "unknown"
	}
	result := "invalid"
	switch sw.status {
	case http.StatusAccepted:
		result = "accepted"
	case http.StatusUnauthorized:
		result = "refused"
	}
	h.Metrics.Webhook(string(forge), result)
}

// statusWriter remembers the status of an answer, for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (h *Webhooks) serve(rw http.ResponseWriter, r *http.Request) {
	forge := Forge(strings.TrimPrefix(r.URL.Path, "/hooks/"))
	switch forge {
	case GitHub, GitLab, Gitea:
	default:
		http.NotFound(rw, r)
		return
	}
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "POST only", http.StatusMethodNotAllowed)
		return
	}
	limit := h.Limit
	if limit <= 0 {
		limit = DefaultWebhookLimit
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		http.Error(rw, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(rw, "read body", http.StatusBadRequest)
		return
	}
	var p hook
	if err := json.Unmarshal(jsonPayload(r, body), &p); err != nil {
		http.Error(rw, "not a webhook payload", http.StatusBadRequest)
		return
	}
	candidates := h.find(p.urls(), forge)
	if len(candidates) == 0 {
		// The same answer as a wrong signature, after the same work: whoever sends hooks
		// without the secret learns nothing of what is watched.
		h.log.Debug("webhook for a repository not watched", "forge", forge)
		signed(forge, r.Header, body, unknownSecret)
		http.Error(rw, refusedAnswer, http.StatusUnauthorized)
		return
	}
	var matched []*Watcher
	for _, w := range candidates {
		secret, err := readSecret("webhook secret", w.cfg.Webhook.SecretFile, w.cfg.Webhook.SecretEnv)
		if err != nil {
			h.refused(w, err.Error())
		} else if signed(forge, r.Header, body, secret) {
			matched = append(matched, w)
		} else {
			h.refused(w, "missing or wrong signature")
		}
	}
	if len(matched) == 0 {
		http.Error(rw, refusedAnswer, http.StatusUnauthorized)
		return
	}
	if !h.firstDelivery(forge, r.Header, body) {
		for _, w := range matched {
			h.refused(w, "delivery id replayed with a different body")
		}
		http.Error(rw, "delivery replayed with a different body", http.StatusUnauthorized)
		return
	}
	event := r.Header.Get(map[Forge]string{GitHub: "X-GitHub-Event", GitLab: "X-Gitlab-Event", Gitea: "X-Gitea-Event"}[forge])
	n, origin, hint := p.pullRequest(forge, event)
	for _, w := range matched {
		h.accepted(w)
		w.origin(n, origin)
		if hint != nil {
			w.hint(n, *hint)
		}
		w.Trigger()
	}
	rw.WriteHeader(http.StatusAccepted)
	io.WriteString(rw, "poll queued\n")
}

// jsonPayload is the JSON of a hook: the body, or its payload field when GitHub was set
// to send a form.
func jsonPayload(r *http.Request, body []byte) []byte {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" {
		if v, err := url.ParseQuery(string(body)); err == nil {
			return []byte(v.Get("payload"))
		}
	}
	return body
}

// find returns the watchers of the repository the payload's URLs name, for forge.
func (h *Webhooks) find(urls []string, forge Forge) []*Watcher {
	for _, u := range urls {
		if u == "" {
			continue
		}
		var out []*Watcher
		for _, w := range h.repos[repoKey(u)] {
			if w.cfg.Forge == forge {
				out = append(out, w)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// refusedAnswer is the body of a 401, for a wrong signature and an unknown repository alike.
const refusedAnswer = "missing or wrong signature"

// unknownSecret signs nothing: checking a hook for an unknown repository against it costs
// what checking a real one does.
const unknownSecret = "no repository is watched with this secret"

// signed checks a hook's signature with the secret of one repository, in constant time.
// GitHub and Gitea sign the raw body with HMAC-SHA256; GitLab sends the secret itself.
func signed(forge Forge, header http.Header, body []byte, secret string) bool {
	var sig string
	switch forge {
	case GitHub:
		var ok bool
		if sig, ok = strings.CutPrefix(header.Get("X-Hub-Signature-256"), "sha256="); !ok {
			sig = ""
		}
	case Gitea:
		sig = header.Get("X-Gitea-Signature")
	case GitLab:
		token := header.Get("X-Gitlab-Token")
		return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(secret)) == 1
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := mac.Sum(nil)
	got, err := hex.DecodeString(sig)
	return err == nil && hmac.Equal(got, want)
}

// firstDelivery remembers a verified hook's delivery id and reports false when the same
// id came before with a different body: someone replaying a captured hook with an altered
// body. That matters for GitLab, whose token does not sign the body. A redelivery of the
// same body is fine: a poll is harmless.
func (h *Webhooks) firstDelivery(forge Forge, header http.Header, body []byte) bool {
	var id string
	switch forge {
	case GitHub:
		id = header.Get("X-GitHub-Delivery")
	case Gitea:
		id = header.Get("X-Gitea-Delivery")
	case GitLab:
		if id = header.Get("X-Gitlab-Event-UUID"); id == "" {
			id = header.Get("Idempotency-Key")
		}
	}
	if id == "" {
		return true
	}
	key, digest := string(forge)+" "+id, sha256.Sum256(body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if seen, ok := h.deliveries[key]; ok {
		return seen == digest
	}
	if len(h.order) >= rememberedDeliveries {
		delete(h.deliveries, h.order[0])
		h.order = h.order[1:]
	}
	h.deliveries[key] = digest
	h.order = append(h.order, key)
	return true
}

// refused logs the first refusal of a repository's hooks (a wrong secret is a
// configuration problem worth one line), not every one: anyone can send refused hooks.
func (h *Webhooks) refused(w *Watcher, why string) {
	if !w.hookFailing.Swap(true) {
		w.log.Warn("webhooks refused", "why", why)
	} else {
		w.log.Debug("webhook refused", "why", why)
	}
}

func (h *Webhooks) accepted(w *Watcher) {
	if w.hookFailing.Swap(false) {
		w.log.Info("webhooks accepted again")
	}
}
