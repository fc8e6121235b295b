package sync

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/forge"
	"github.com/gilliam-sync/gilliam-sync/router"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Notes is what one repository's forge should show now: the latest status of each
// formation's context and the comment of each pull request's preview.
type Notes struct {
	Statuses []forge.Status
	Comments []forge.PRComment
	// Silent says, per target with a commit and no status, why it has none (for Debug logs).
	Silent map[string]string
}

// StatusContext is the context of a formation's commit statuses: one per formation
// (previews included), so formations never overwrite each other. An installation other than
// the default one (its own KV prefix on a shared Consul) posts as
// gilliam/<installation>/<formation>: the notifier adds it.
func StatusContext(formation string) string { return "gilliam/" + formation }

// Notify is what the forges should show, per repository key, as a pure function of the
// world, what the executor remembers and the routers' listeners (for target URLs): a
// commit is pending while its images are resolved and its roll-out runs, a success once
// every service runs its release and passes its checks, a failure with the reason when it
// cannot deploy (an invalid gilliam.yml with its file:line, a failed build's last line, a
// reverted roll-out). A status always names the commit the formation's releases came
// from: the target's, which the desired state records.
func Notify(w *World, m Memory, ls []router.Listener) map[string]Notes {
	out := map[string]Notes{}
	for _, repo := range w.Repos {
		n := Notes{Silent: map[string]string{}}
		seen := map[string]bool{}
		for _, t := range repo.Targets {
			st, why := targetStatus(w, m, t, ls)
			switch {
			case why != "":
				if t.Commit != "" {
					n.Silent[t.Key()] = why
				}
			case seen[st.Context]:
				n.Silent[t.Key()] = "context " + st.Context + " taken by another target"
			default:
				seen[st.Context] = true
				n.Statuses = append(n.Statuses, st)
			}
		}
		n.Comments = previewComments(w, repo, ls)
		out[repo.Key] = n
	}
	return out
}

// targetStatus is the status of a target's commit, or why there is none to show.
func targetStatus(w *World, m Memory, t Target, ls []router.Listener) (forge.Status, string) {
	switch {
	case t.Commit == "":
		return forge.Status{}, "no commit"
	case t.Source == nil:
		return forge.Status{}, "not read yet"
	case t.Denied != "":
		return forge.Status{}, "denied: " + t.Denied
	}
	name := formationName(t, t.Source.Formation)
	st := forge.Status{Commit: t.Commit, Context: StatusContext(name)}
	ot, ok := observedOf(w.KV, t.Repo).Targets[t.Key()]
	handled := ok && ot.Commit == t.Commit
	fs := w.KV.Status[name]
	switch {
	case handled && ot.TornDown:
		return st, "torn down"
	case handled && ot.Error != "":
		st.State, st.Description = forge.Failure, describe(ot.Error)
		return st, ""
	case handled && fs != nil && fs.Commit == t.Commit && fs.Error != "" && fs.Deployed != t.Commit:
		st.State, st.Description = forge.Failure, describe(fs.Error)
		return st, ""
	case handled:
		d := w.KV.Desired[name]
		switch { // not deployed by this target (previews off, a newer deploy)?
		case d == nil:
			return st, "no desired state"
		case d.Commit != t.Commit:
			return st, "desired state is of commit " + short(d.Commit)
		case fs == nil:
			return st, "no formation status"
		case fs.TearingDown != "":
			return st, "tearing down"
		}
		st.State, st.Description = rolloutState(w, name, d)
		if st.State != forge.Failure {
			st.TargetURL = formationURL(w, name, ls)
		}
		return st, ""
	}
	switch r := m.Retries[t.ID()]; {
	case t.Source.Err != nil:
		return st, "invalid: the next decision records it"
	case m.InFlight[t.ID()] == t.Commit:
		st.State, st.Description = forge.Pending, "building"
		if r.Commit == t.Commit {
			st.Description = fmt.Sprintf("building (attempt %d)", r.Attempts+1)
		}
	case m.Images[t.ID()].Commit == t.Commit && m.Images[t.ID()].Err == nil:
		st.State, st.Description = forge.Pending, "built: releasing"
	case r.Commit == t.Commit:
		st.State, st.Description = forge.Pending, "retrying"
		if fs != nil && fs.Commit == t.Commit && fs.Error != "" {
			st.Description = "retrying: " + describe(fs.Error)
		}
	case ok && ot.Commit != t.Commit:
		return st, "not building; handled at commit " + short(ot.Commit) + " only"
	default:
		return st, "not handled yet, not building"
	}
	return st, ""
}

// rolloutState says how far a formation's deploy of its desired commit is.
func rolloutState(w *World, name string, d *state.Desired) (forge.State, string) {
	services := make([]string, 0, len(d.Services))
	for s := range d.Services {
		services = append(services, s)
	}
	sort.Strings(services)
	var waiting []string
	for _, s := range services {
		ds := d.Services[s]
		switch {
		case ds.Failed != "" && ds.Failed == ds.Latest && ds.Pin == nil && phaseFailed(ds):
			return forge.Failure, s + ": release phase failed: " + ds.ReleasePhase.Error
		case ds.Failed != "" && ds.Failed == ds.Latest && ds.Pin == nil:
			return forge.Failure, "roll-out reverted: " + failedEvent(w, name, s, ds.Failed)
		case ds.Pin != nil && ds.Pin.Release != ds.Latest:
			return forge.Pending, fmt.Sprintf("%s is pinned to release %s (a rollback): not deployed until unpinned", s, short(ds.Pin.Release))
		case !settledAndHealthy(name, s, ds, passingOf(w, name, s), w.Now):
			waiting = append(waiting, s)
		}
	}
	if len(waiting) > 0 {
		return forge.Pending, "rolling out " + strings.Join(waiting, ", ")
	}
	return forge.Success, fmt.Sprintf("deployed: %d service(s) running and healthy", len(services))
}

// failedEvent is the history's word on a service's failed roll-out.
func failedEvent(w *World, formation, service, release string) string {
	h := w.KV.History[formation]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Service == service && strings.Contains(h[i].What, "failed") {
			return service + ": " + h[i].What
		}
	}
	return service + ": release " + short(release) + " did not pass its checks in time"
}

// describe makes an error a status's description (the forges keep 140 characters): a
// build's failure with the last line of its log; an invalid gilliam.yml with its first
// problem, file:line first; else the first line.
func describe(err string) string {
	lines := nonEmpty(strings.Split(err, "\n"))
	if len(lines) == 0 {
		return ""
	}
	first := strings.TrimSpace(commitPrefix.ReplaceAllString(lines[0], ""))
	if i := strings.Index(err, "\nbuild log (end"); i >= 0 && len(lines) > 2 {
		reason := first
		if _, after, ok := strings.Cut(first, " failed: "); ok {
			reason = "build failed: " + after
		}
		return reason + ": " + strings.TrimSpace(lines[len(lines)-1])
	}
	if strings.HasSuffix(first, ":") && len(lines) > 1 {
		d := strings.TrimSpace(lines[1])
		if more := len(lines) - 2; more > 0 {
			d += fmt.Sprintf(" (and %d more)", more)
		}
		return d
	}
	return first
}

// commitPrefix is how errors name their commit: the status is on that commit already.
var commitPrefix = regexp.MustCompile(`^commit [0-9a-f]+: `)

func nonEmpty(lines []string) []string {
	out := lines[:0:0]
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// codeSpan shows text that may come from a pull request (an error quoting its gilliam.yml)
// as inline code: no markdown, link, HTML or @mention of its author's is rendered.
func codeSpan(s string) string {
	s = strings.NewReplacer("`", "'", "\n", " ", "\r", " ").Replace(s)
	return "`` " + s + " ``"
}

// formationURL is where routers serve a formation's web service, or "" (no router, no
// web service).
func formationURL(w *World, name string, ls []router.Listener) string {
	r := w.KV.Routes[name]
	if r == nil || r.Web == "" || len(ls) == 0 {
		return ""
	}
	urls := router.URLs(ls, name, r.Web, false, true, nil)
	if len(urls) == 0 {
		return ""
	}
	return urls[0]
}

// PRNumber is the number of a pull (merge) request's head ref, or 0.
func PRNumber(ref string) int {
	for _, prefix := range []string{"refs/pull/", "refs/merge-requests/"} {
		if rest, ok := strings.CutPrefix(ref, prefix); ok {
			if n, tail, ok := strings.Cut(rest, "/"); ok && tail == "head" {
				if v, err := strconv.Atoi(n); err == nil && v > 0 {
					return v
				}
			}
		}
	}
	return 0
}

// previewComments is the comment of each pull request's preview of a repository: its
// services' URLs, releases and states while it lives; closed once torn down.
func previewComments(w *World, repo RepoView, ls []router.Listener) []forge.PRComment {
	obs := observedOf(w.KV, repo.Key)
	keys := make([]string, 0, len(obs.Targets))
	for k := range obs.Targets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []forge.PRComment
	for _, k := range keys {
		ot := obs.Targets[k]
		pr := PRNumber(ot.Ref)
		if !ot.Preview || ot.Formation == "" || pr == 0 {
			continue
		}
		c := forge.PRComment{PR: pr, Key: ot.Formation}
		st, d := w.KV.Status[ot.Formation], w.KV.Desired[ot.Formation]
		if ot.TornDown || st == nil || d == nil || st.TearingDown != "" {
			c.Closed = true
			c.Body = fmt.Sprintf("**Preview `%s`**: closed. Its instances are stopped and its releases removed.", ot.Formation)
			out = append(out, c)
			continue
		}
		c.Body = previewBody(w, ot.Formation, st, d, ls)
		out = append(out, c)
	}
	return out
}

func previewBody(w *World, name string, st *state.FormationStatus, d *state.Desired, ls []router.Listener) string {
	var b strings.Builder
	state, desc := rolloutState(w, name, d)
	fmt.Fprintf(&b, "**Preview `%s`** at commit `%s`: %s (%s).\n\n", name, short(d.Commit), map[forge.State]string{
		forge.Pending: "deploying", forge.Success: "ready", forge.Failure: "failed"}[state], desc)
	if st.Error != "" && st.Commit != st.Deployed {
		fmt.Fprintf(&b, "Commit `%s` was not deployed: %s\n\n", short(st.Commit), codeSpan(describe(st.Error)))
	}
	b.WriteString("| service | URL | release | state |\n|---|---|---|---|\n")
	services := make([]string, 0, len(d.Services))
	for s := range d.Services {
		services = append(services, s)
	}
	sort.Strings(services)
	routes := w.KV.Routes[name]
	for _, s := range services {
		ds := d.Services[s]
		rel := w.KV.Releases[name][ds.Target()]
		internal := rel != nil && rel.Internal
		web := routes != nil && routes.Web == s
		url := "none (no router)"
		if internal {
			url = "internal"
		} else if urls := router.URLs(ls, name, s, false, web, nil); len(urls) > 0 {
			url = urls[0]
		}
		scale := ds.Scale()
		healthy := passingOf(w, name, s).healthyFor(name, s, ds.Target(), scale, 0, w.Now)
		what := fmt.Sprintf("%d/%d healthy", healthy, scale)
		switch {
		case ds.Failed != "" && ds.Failed == ds.Latest:
			what = "roll-out failed, reverted"
		case ds.Rollout != nil:
			what = "rolling out, " + what
		}
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s |\n", s, url, short(ds.Target()), what)
	}
	b.WriteString("\n<sub>Updated by gilliam-sync as the preview changes.</sub>")
	return b.String()
}
