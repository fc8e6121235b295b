package state

import (
	"context"
	"time"
)

// Timeline is what happened to one release on its way to serving, in the order it
// happens: each time is zero until that step happened. The leader records it as data in
// the same transactions that write the desired state (formations/<f>/timeline), with the
// clock its decisions are given: Detected, BuildStarted and Built come from the commit's
// image resolution, Released from the deploy, FirstPassing and RolloutDone from the
// roll-out.
type Timeline struct {
	Service string `json:"service"`
	Release string `json:"release"`
	Commit  string `json:"commit,omitempty"`
	Cause   string `json:"cause,omitempty"` // push or config
	// Detected is when the leader first saw the commit (or the config change).
	Detected time.Time `json:"detected,omitzero"`
	// BuildStarted and Built bound the making of the image: a build, or finding it built.
	BuildStarted time.Time `json:"build_started,omitzero"`
	Built        time.Time `json:"built,omitzero"`
	// Released is when the release and the desired state naming it were written.
	Released time.Time `json:"released,omitzero"`
	// FirstPassing is when the first instance of the release passed its check.
	FirstPassing time.Time `json:"first_passing,omitzero"`
	// RolloutDone is when the service ran the release at full scale, every instance
	// passing; or, with Result failed or superseded, when its roll-out ended.
	RolloutDone time.Time `json:"rollout_done,omitzero"`
	// Result is "" while on its way, then done, failed (reverted at the deadline),
	// superseded (a newer release replaced it first) or skipped (pinned, never rolled out).
	Result string `json:"result,omitempty"`
}

// Ended says whether the release's way ended, one way or another.
func (t *Timeline) Ended() bool { return t.Result != "" }

// maxTimeline is how many releases a formation's timeline keeps.
const maxTimeline = 50

// AppendTimeline is a timeline with entries added, keeping the newest maxTimeline.
func AppendTimeline(tl []Timeline, entries ...Timeline) []Timeline {
	out := append(append([]Timeline{}, tl...), entries...)
	if len(out) > maxTimeline {
		out = out[len(out)-maxTimeline:]
	}
	return out
}

func (s *Store) timelineKey(formation string) string {
	return s.formationsKey() + formation + "/timeline"
}

// PutTimeline writes a formation's whole timeline. It has no check-and-set of its own:
// the leader writes it in the transaction that writes the formation's desired state with
// check-and-set, or alone when only the leader's own roll-out bookkeeping changed.
func (b *Batch) PutTimeline(formation string, tl []Timeline) {
	b.put(b.store.timelineKey(formation), tl, nil)
}

// Timeline reads a formation's deploy timeline, oldest first.
func (s *Store) Timeline(ctx context.Context, formation string) ([]Timeline, error) {
	var tl []Timeline
	_, _, err := s.get(ctx, s.timelineKey(formation), &tl)
	return tl, err
}
