package sync

import (
	"sort"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// The deploy timeline (state.Timeline): what happened to each release on its way to
// serving. These functions are pure, part of Reconcile: deploy opens an entry per service
// whose latest release changes, and decideRollouts moves the entries on as instances pass
// and roll-outs end. The executor writes them and, at the edge, records the metrics they
// imply (push-to-serving, the timeline's steps, roll-out durations).

// BuildTiming is when the making of one service's image began and ended, by the
// executor's clock.
type BuildTiming struct {
	Started, Done time.Time
}

// RolloutEnd is a roll-out that ended in a decision, for the metrics.
type RolloutEnd struct {
	Service  string
	Result   string // done, failed, superseded, abandoned
	Duration time.Duration
}

// openTimeline is the entries a deploy opens: one per service whose latest release
// changes, with what the image resolution and the source say of its first steps.
func openTimeline(current *state.Desired, latest map[string]string, t Target, cause string, out ImagesOutcome, now time.Time) []state.Timeline {
	var entries []state.Timeline
	for svc, id := range latest {
		if current != nil && current.Services[svc].Latest == id {
			continue
		}
		e := state.Timeline{Service: svc, Release: id, Commit: t.Commit, Cause: cause, Released: now.UTC()}
		if tm, ok := out.Timings[svc]; ok {
			e.BuildStarted, e.Built = tm.Started.UTC(), tm.Done.UTC()
		}
		switch {
		case cause == "push" && t.Source != nil && !t.Source.Detected.IsZero():
			e.Detected = t.Source.Detected.UTC()
		default: // a config change: detected when its images were asked for
			e.Detected = e.BuildStarted
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Service < entries[j].Service })
	return entries
}

// stepTimeline moves the open entries of one service on, after the service advanced from
// before to after: the first instance of its release passing, its roll-out done, failed,
// or superseded by a newer release. It changes tl in place and returns the entries that
// ended done (served) in this step.
func stepTimeline(tl []state.Timeline, formation, service string, after state.DesiredService, passing Passing, ready bool, now time.Time) (changed bool, served []state.Timeline) {
	for i := range tl {
		e := &tl[i]
		if e.Service != service || e.Ended() {
			continue
		}
		newer := false
		for j := i + 1; j < len(tl); j++ {
			if tl[j].Service == service {
				newer = true
			}
		}
		if e.FirstPassing.IsZero() {
			if since, ok := firstPassing(passing, formation, service, e.Release); ok {
				if since.Before(e.Released) { // it ran already (a canary, a revert): passing once released
					since = e.Released
				}
				e.FirstPassing, changed = since.UTC(), true
			}
		}
		switch {
		case e.Release == after.Target() && ready:
			e.RolloutDone, e.Result, changed = now.UTC(), "done", true
			if e.FirstPassing.IsZero() || e.FirstPassing.After(e.RolloutDone) {
				e.FirstPassing = e.RolloutDone
			}
			served = append(served, *e)
		case e.Release == after.Failed && after.Rollout == nil:
			e.RolloutDone, e.Result, changed = now.UTC(), "failed", true
		case e.Release != after.Target() && newer:
			e.RolloutDone, e.Result, changed = now.UTC(), "superseded", true
		}
	}
	return changed, served
}

// firstPassing is since when the earliest passing instance of a release has passed.
func firstPassing(passing Passing, formation, service, release string) (time.Time, bool) {
	prefix := state.InstanceID(formation, service, release, 0)
	prefix = strings.TrimSuffix(prefix, "0") // formation-service-release-
	var first time.Time
	for id, since := range passing {
		if strings.HasPrefix(id, prefix) && (first.IsZero() || since.Before(first)) {
			first = since
		}
	}
	return first, !first.IsZero()
}

// rolloutEnd says whether a service's roll-out ended between before and after, and how.
func rolloutEnd(service string, before, after state.DesiredService, now time.Time) (RolloutEnd, bool) {
	r := before.Rollout
	if r == nil || (after.Rollout != nil && after.Rollout.To == r.To) {
		return RolloutEnd{}, false
	}
	end := RolloutEnd{Service: service, Duration: now.Sub(r.Started)}
	switch {
	case after.Rollout != nil:
		end.Result = "superseded"
	case after.Failed == r.To && before.Failed != r.To:
		end.Result = "failed"
	case len(after.Deployments) > 0 && after.Deployments[0].Release == r.To:
		end.Result = "done"
	default:
		end.Result = "abandoned"
	}
	return end, true
}
