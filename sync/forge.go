package sync

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// notifier tells the forges what the leader did (Notify decides what), out of band: the
// leader hands it each decision's world and goes on; it derives what to show and a
// forge.Notifier posts it, retrying on its own. Only the leader runs one.
type notifier struct {
	store *state.Store
	// scope sets this installation apart on a shared forge: "" for the default one, else
	// "<installation>/", in each context (gilliam/<installation>/<formation>) and marker.
	scope   string
	log     *slog.Logger
	repos   map[string]notifyRepo // by RepoView.Key
	forge   *forge.Notifier
	latest  chan notifyInput
	routers func() []router.Listener
	// said is what was last logged (at Debug) of what the forges should show.
	said string
}

type notifyRepo struct {
	url    string
	client forge.Client
	cfg    *gitwatch.Notify
}

type notifyInput struct {
	world  *World
	memory Memory
}

// newNotifier returns nil when no repository asks for notifications.
func newNotifier(store *state.Store, repos []*repoState, log *slog.Logger, now func() time.Time) (*notifier, error) {
	n := &notifier{store: store, log: log, repos: map[string]notifyRepo{}, latest: make(chan notifyInput, 1)}
	if inst := store.Installation(); inst != names.DefaultInstallation {
		n.scope = inst + "/"
	}
	for _, r := range repos {
		cfg := r.cfg.Notify
		if cfg == nil {
			continue
		}
		c, err := forge.New(forge.Config{Kind: forge.Kind(r.cfg.Forge), API: cfg.APIURL, Project: cfg.Project, RepoURL: r.cfg.URL, Token: cfg.Token})
		if err != nil {
			return nil, err
		}
		n.repos[r.key] = notifyRepo{url: gitwatch.Sanitize(r.cfg.URL), client: c, cfg: cfg}
	}
	if len(n.repos) == 0 {
		return nil, nil
	}
	n.forge = forge.NewNotifier(forge.DefaultBackoff, log, now)
	n.forge.OnChange = n.report
	var cached []router.Listener
	var at time.Time
	n.routers = func() []router.Listener { // the routers change rarely: asked at most every 30 s
		if time.Since(at) > 30*time.Second {
			if ls, err := router.Listeners(store.Client()); err == nil {
				cached, at = ls, time.Now()
			}
		}
		return cached
	}
	return n, nil
}

// repoFor is the forge client of a repository, if it has one.
func (n *notifier) repoFor(key string) (notifyRepo, bool) {
	if n == nil {
		return notifyRepo{}, false
	}
	r, ok := n.repos[key]
	return r, ok
}

// offer hands the notifier the latest decision's inputs; it never blocks.
func (n *notifier) offer(w *World, m Memory) {
	if n == nil {
		return
	}
	select {
	case <-n.latest: // an older one not taken yet: replaced
	default:
	}
	n.latest <- notifyInput{world: w, memory: m}
}

// run derives and delivers until ctx ends (the end of leadership).
func (n *notifier) run(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); n.forge.Run(ctx) }()
	defer func() { <-done }()
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-n.latest:
			n.forge.Want(n.wants(in))
		}
	}
}

func (n *notifier) wants(in notifyInput) []forge.Want {
	notes := Notify(in.world, in.memory, n.routers())
	n.debug(notes)
	var out []forge.Want
	for key, r := range n.repos {
		w := forge.Want{Repo: r.url, Client: r.client}
		if r.cfg.WantStatuses() {
			for _, st := range notes[key].Statuses {
				st.Context = StatusContext(n.scope + strings.TrimPrefix(st.Context, StatusContext("")))
				w.Statuses = append(w.Statuses, st)
			}
		}
		if r.cfg.WantComments() {
			for _, c := range notes[key].Comments {
				c.Key = n.scope + c.Key
				w.Comments = append(w.Comments, c)
			}
		}
		out = append(out, w)
	}
	return out
}

// debug logs what the forges should show, and why a target shows nothing, when it changes.
func (n *notifier) debug(notes map[string]Notes) {
	if n.log == nil || !n.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	keys := make([]string, 0, len(notes))
	for k := range notes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, st := range notes[k].Statuses {
			fmt.Fprintf(&b, "%s on %s: %s %q; ", st.Context, short(st.Commit), st.State, st.Description)
		}
		silent := make([]string, 0, len(notes[k].Silent))
		for t, why := range notes[k].Silent {
			silent = append(silent, t+": "+why)
		}
		sort.Strings(silent)
		for _, s := range silent {
			b.WriteString("no status for " + s + "; ")
		}
	}
	if said := b.String(); said != n.said {
		n.said = said
		n.log.Debug("forge notes", "notes", said)
	}
}

// report writes how the deliveries stand to Consul, for `gilliam-sync status`.
func (n *notifier) report(ds []forge.Delivery) {
	r := &state.ForgeReport{Deliveries: []state.ForgeDelivery{}, Updated: time.Now().UTC()}
	for _, d := range ds {
		r.Deliveries = append(r.Deliveries, state.ForgeDelivery{Repo: d.Repo, What: d.What, Formation: strings.TrimPrefix(strings.TrimPrefix(d.Key, StatusContext("")), n.scope),
			Commit: d.Commit, State: string(d.State), Delivered: d.Delivered, Error: d.Error, Attempts: d.Attempts, Since: d.Since})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.store.PutForgeReport(ctx, r); err != nil {
		n.log.Debug("forge report not written", "err", err)
	}
}
