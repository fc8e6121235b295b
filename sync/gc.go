package sync

import (
	"context"
	"errors"
)

// collectReleases deletes a formation's old releases: per service it keeps the newest
// Config.KeepReleases, and always every release that is running, rolling in or out,
// latest, pinned, or the last failed one (status names it).
func (s *Syncer) collectReleases(ctx context.Context, formation string) error {
	d, _, err := s.store.Desired(ctx, formation)
	if err != nil || d == nil {
		return err
	}
	releases, err := s.store.Releases(ctx, formation) // newest first
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, ds := range d.Services {
		for _, dep := range ds.Deployments {
			keep[dep.Release] = true
		}
		keep[ds.Latest], keep[ds.Failed] = true, true
		if ds.Pin != nil {
			keep[ds.Pin.Release] = true
		}
		if ds.Rollout != nil {
			keep[ds.Rollout.From], keep[ds.Rollout.To] = true, true
		}
	}
	seen := map[string]int{}
	var errs []error
	for _, r := range releases {
		seen[r.Service]++
		if keep[r.ID] || seen[r.Service] <= s.cfg.KeepReleases {
			continue
		}
		if err := s.store.DeleteRelease(ctx, formation, r.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("release deleted (older than the newest kept)", "formation", formation, "service", r.Service, "release", r.ID, "keep", s.cfg.KeepReleases)
	}
	return errors.Join(errs...)
}
