package forge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// PRComment is the comment the control plane keeps on one pull request about one preview
// formation (Key). The notifier prefixes Body with a hidden marker naming Key, by which it
// finds the comment again, and edits it in place rather than adding another.
type PRComment struct {
	PR   int
	Key  string
	Body string
	// Closed says the preview is gone: an existing comment is edited to Body, but none is
	// created.
	Closed bool
}

// Want is everything one repository's forge should show now: the latest status of each
// context, and the comment of each preview.
type Want struct {
	Repo     string // names the repository in logs and reports (its sanitized URL)
	Client   Client
	Statuses []Status
	Comments []PRComment
}

// Delivery is how one status or comment stands, for `gilliam-sync status`.
type Delivery struct {
	Repo string `json:"repo"`
	// What is the status's context, or "pull request N comment (KEY)"; Key the context,
	// or the comment's key.
	What   string `json:"what"`
	Key    string `json:"key"`
	Commit string `json:"commit,omitempty"`
	State  State  `json:"state,omitempty"`
	// Delivered says the forge shows what is wanted; Error why not, while it fails.
	Delivered bool      `json:"delivered"`
	Error     string    `json:"error,omitempty"`
	Attempts  int       `json:"attempts,omitempty"`
	Since     time.Time `json:"since,omitzero"`
}

// StatusSpacing is the least time between two statuses posted for one commit and context.
// Gitea lists a commit's statuses newest first by their creation time in whole seconds, so
// a pending and the success posted within one second (a fast deploy) would list in either
// order, and a reader of that list could take the pending for the newest.
const StatusSpacing = time.Second

// MaxStatusesPerCommit caps the statuses posted for one commit and context; GitHub keeps
// 1,000 at most. A deploy posts a handful.
const MaxStatusesPerCommit = 100

// Notifier delivers what the control plane wants the forges to show, out of band: Want
// returns at once, a single goroutine (Run) posts. What was delivered is not posted again;
// a failure is retried with Backoff (logged once when failing starts and once when it
// recovers); a repository whose rate limit is spent waits until the forge says it may
// go on. Nothing here blocks the caller.
type Notifier struct {
	backoff fault.Backoff
	log     *slog.Logger
	now     func() time.Time
	// OnChange, when set, is called (from Run's goroutine) with the deliveries whenever
	// one changes: the sync daemon writes them to Consul for `status`.
	OnChange func([]Delivery)

	mu      stdsync.Mutex
	items   map[string]*item
	clients map[string]Client
	limited map[string]time.Time // repo -> rate limited until
	me      map[string]string    // repo -> the token's login ("" unknown)
	kick    chan struct{}
}

type item struct {
	repo    string
	status  *Status
	comment *PRComment
	// sent is the fingerprint of what the forge shows; last the status last delivered.
	sent      string
	last      Status
	postedAt  time.Time // when last was delivered
	perCommit int
	commentID int64
	attempts  int
	next      time.Time
	failing   string
	since     time.Time
	wanted    bool
}

func (it *item) fingerprint() string {
	if it.status != nil {
		s := it.status
		return strings.Join([]string{s.Commit, string(s.State), s.Description, s.TargetURL}, "\x00")
	}
	return it.comment.Body + fmt.Sprint(it.comment.Closed)
}

// DefaultBackoff is the backoff between attempts at a failing delivery: 2 s, doubling, at
// most 5 minutes.
var DefaultBackoff = fault.Backoff{Base: 2 * time.Second, Max: 5 * time.Minute}

// NewNotifier returns a notifier; retries follow b (zero: DefaultBackoff).
func NewNotifier(b fault.Backoff, log *slog.Logger, now func() time.Time) *Notifier {
	if b.Base == 0 {
		b = DefaultBackoff
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Notifier{backoff: b, log: log, now: now, items: map[string]*item{}, clients: map[string]Client{},
		limited: map[string]time.Time{}, me: map[string]string{}, kick: make(chan struct{}, 1)}
}

// Want replaces what the forges should show, for every repository at once; a repository
// left out shows what it showed. It never blocks.
func (n *Notifier) Want(wants []Want) {
	n.mu.Lock()
	for _, it := range n.items {
		it.wanted = false
	}
	for _, w := range wants {
		n.clients[w.Repo] = w.Client
		for _, s := range w.Statuses {
			key := w.Repo + "\x00status\x00" + s.Context
			it := n.item(key, w.Repo)
			s := s
			if it.status == nil || *it.status != s {
				it.status, it.attempts, it.next = &s, 0, time.Time{}
			}
			it.wanted = true
		}
		for _, c := range w.Comments {
			key := fmt.Sprintf("%s\x00comment\x00%d\x00%s", w.Repo, c.PR, c.Key)
			it := n.item(key, w.Repo)
			c := c
			if it.comment == nil || *it.comment != c {
				it.comment, it.attempts, it.next = &c, 0, time.Time{}
			}
			it.wanted = true
		}
	}
	for key, it := range n.items {
		if !it.wanted && !inWants(wants, it.repo) {
			it.wanted = true // another repository's: untouched
			continue
		}
		if !it.wanted {
			delete(n.items, key)
		}
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func inWants(wants []Want, repo string) bool {
	for _, w := range wants {
		if w.Repo == repo {
			return true
		}
	}
	return false
}

func (n *Notifier) item(key, repo string) *item {
	it := n.items[key]
	if it == nil {
		it = &item{repo: repo}
		n.items[key] = it
	}
	return it
}

// Run delivers until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := n.Flush(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-n.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// Flush delivers everything due now and says how long until something else is due (at
// most a minute).
func (n *Notifier) Flush(ctx context.Context) time.Duration {
	changed := false
	for ctx.Err() == nil {
		key, it, client := n.due()
		if it == nil {
			break
		}
		err := n.deliver(ctx, key, it, client)
		if ctx.Err() != nil {
			return time.Minute
		}
		changed = n.settle(key, it, err) || changed
	}
	if changed && n.OnChange != nil {
		n.OnChange(n.Deliveries())
	}
	return n.untilNext()
}

// due picks an item whose wanted state is not delivered and whose time has come.
func (n *Notifier) due() (string, *item, Client) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	keys := make([]string, 0, len(n.items))
	for k := range n.items {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		it := n.items[k]
		if it.sent == it.fingerprint() || now.Before(n.dueAt(it)) {
			continue
		}
		// Work on a copy: Want may change the item meanwhile.
		c := *it
		if it.status != nil {
			s := *it.status
			c.status = &s
		} else {
			cm := *it.comment
			c.comment = &cm
		}
		return k, &c, n.clients[it.repo]
	}
	return "", nil, nil
}

func (n *Notifier) untilNext() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, wait := n.now(), time.Minute
	for _, it := range n.items {
		if it.sent == it.fingerprint() {
			continue
		}
		wait = min(wait, max(n.dueAt(it).Sub(now), 10*time.Millisecond))
	}
	return wait
}

// dueAt is the earliest time an undelivered item may be posted: after its backoff, its
// repository's rate limit, and StatusSpacing after the last status on the same commit.
// Callers hold n.mu.
func (n *Notifier) dueAt(it *item) time.Time {
	at := it.next
	if l := n.limited[it.repo]; l.After(at) {
		at = l
	}
	if it.status != nil && it.last.Commit == it.status.Commit {
		if s := it.postedAt.Add(StatusSpacing); s.After(at) {
			at = s
		}
	}
	return at
}

// deliver posts one item (the copy due returned).
func (n *Notifier) deliver(ctx context.Context, key string, it *item, c Client) error {
	if c == nil {
		return errors.New("no client")
	}
	if s := it.status; s != nil {
		if it.last.Commit != "" && it.last.Commit != s.Commit && it.last.State == Pending {
			// The commit it was pending for will never finish: say so on that commit.
			old := Status{Commit: it.last.Commit, Context: s.Context, State: Error, Description: "superseded by " + short(s.Commit) + " before its roll-out finished"}
			if err := c.SetStatus(ctx, old); err != nil {
				return err
			}
			n.mu.Lock()
			if cur := n.items[key]; cur != nil {
				cur.last = old
			}
			n.mu.Unlock()
			it.last = old
		}
		if it.last.Commit == s.Commit && it.perCommit >= MaxStatusesPerCommit {
			return fault.Stall(fmt.Errorf("%d statuses posted for %s on %s already: no more", it.perCommit, s.Context, short(s.Commit)))
		}
		return c.SetStatus(ctx, *s)
	}
	return n.deliverComment(ctx, key, it, c)
}

// Marker is the hidden first line by which a preview's comment is found again.
func Marker(key string) string { return "<!-- gilliam-sync preview " + key + " -->" }

func (n *Notifier) deliverComment(ctx context.Context, key string, it *item, c Client) error {
	cm := it.comment
	body := Marker(cm.Key) + "\n" + cm.Body
	if it.commentID != 0 {
		err := c.EditComment(ctx, cm.PR, it.commentID, body)
		var api *APIError
		if !errors.As(err, &api) || api.Code != 404 {
			return err
		}
		it.commentID = 0 // deleted by someone: find or create it again
	}
	me, err := n.whoami(ctx, it.repo, c)
	if err != nil {
		return err
	}
	comments, err := c.Comments(ctx, cm.PR)
	if err != nil {
		return err
	}
	for _, have := range comments {
		if !strings.HasPrefix(have.Body, Marker(cm.Key)) || (me != "" && have.Author != me) {
			continue // not ours: never edited, even with our marker
		}
		n.setComment(key, have.ID)
		if have.Body == body {
			return nil
		}
		return c.EditComment(ctx, cm.PR, have.ID, body)
	}
	if cm.Closed {
		return nil // nothing was said: nothing to close
	}
	id, err := c.CreateComment(ctx, cm.PR, body)
	if err == nil {
		n.setComment(key, id)
	}
	return err
}

func (n *Notifier) setComment(key string, id int64) {
	n.mu.Lock()
	if it := n.items[key]; it != nil {
		it.commentID = id
	}
	n.mu.Unlock()
}

// whoami is the token's login, asked once per repository. A forge that does not say (a
// GitHub App's token cannot ask) leaves it unknown: comments are then found by marker
// alone.
func (n *Notifier) whoami(ctx context.Context, repo string, c Client) (string, error) {
	n.mu.Lock()
	me, ok := n.me[repo]
	n.mu.Unlock()
	if ok {
		return me, nil
	}
	me, err := c.Me(ctx)
	var limited *RateLimitedError
	if errors.As(err, &limited) || (err != nil && fault.KindOf(err) == fault.Retryable) {
		return "", err
	}
	n.mu.Lock()
	n.me[repo] = me
	n.mu.Unlock()
	return me, nil
}

// settle records a delivery's outcome; it says whether the deliveries changed.
func (n *Notifier) settle(key string, done *item, err error) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	it := n.items[key]
	if it == nil {
		return false
	}
	now := n.now()
	var limited *RateLimitedError
	switch {
	case err == nil:
		if it.status != nil && done.status != nil {
			if it.last.Commit == done.status.Commit {
				it.perCommit++
			} else {
				it.perCommit = 1
			}
			it.last, it.postedAt = *done.status, now
		}
		if it.fingerprint() == done.fingerprint() {
			it.sent = done.fingerprint()
		}
		n.log.Debug("forge delivered", "repo", it.repo, "what", what(done), "state", stateOf(done))
		if it.failing != "" {
			n.log.Info("forge delivery recovered", "repo", it.repo, "what", what(done), "after_attempts", it.attempts)
		}
		it.failing, it.attempts, it.next = "", 0, time.Time{}
		return true
	case errors.As(err, &limited):
		n.limited[it.repo] = limited.Until
		if it.failing == "" {
			n.log.Warn("forge rate limit reached: waiting", "repo", it.repo, "until", limited.Until.UTC().Format(time.RFC3339))
			it.failing, it.since = err.Error(), now
			return true
		}
		return false
	default:
		it.attempts++
		it.next = n.backoff.After(key, it.attempts, now)
		if fault.KindOf(err) == fault.Stalled {
			it.next = now.Add(n.backoff.Max) // a person must act: try at the slowest pace
		}
		first := it.failing == ""
		it.failing = err.Error()
		if first {
			it.since = now
			n.log.Warn("forge delivery failing; retrying with backoff", "repo", it.repo, "what", what(done), "err", err)
		}
		return first
	}
}

func stateOf(it *item) string {
	if it.status != nil {
		return string(it.status.State) + " " + it.status.Description
	}
	if it.comment.Closed {
		return "closed"
	}
	return "open"
}

func what(it *item) string {
	if it.status != nil {
		return it.status.Context + " on " + short(it.status.Commit)
	}
	return fmt.Sprintf("comment on pull request %d", it.comment.PR)
}

// Deliveries lists how every status and comment stands, sorted.
func (n *Notifier) Deliveries() []Delivery {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Delivery, 0, len(n.items))
	for _, it := range n.items {
		d := Delivery{Repo: it.repo, Delivered: it.sent == it.fingerprint(), Error: it.failing, Attempts: it.attempts}
		if it.failing != "" {
			d.Since = it.since
		}
		if it.status != nil {
			d.What, d.Key, d.Commit, d.State = it.status.Context, it.status.Context, it.status.Commit, it.status.State
		} else {
			d.What, d.Key = fmt.Sprintf("pull request %d comment (%s)", it.comment.PR, it.comment.Key), it.comment.Key
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Repo != out[j].Repo {
			return out[i].Repo < out[j].Repo
		}
		return out[i].What < out[j].What
	})
	return out
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}
