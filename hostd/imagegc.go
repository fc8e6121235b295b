package hostd

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// Image garbage collection: a host removes the images it pulled once no assignment has
// named them for ImageGCGrace, never one a container (any container on the engine, ours
// or not) was created from, and never one it did not pull itself. What it pulled is
// recorded in the data dir (images.json), since an image carries no label of ours.

// pulledImage is an image this daemon pulled. When it was last named lives in memory
// only: a restarted daemon starts every image's clock again, so it never removes early.
type pulledImage struct {
	Pulled    time.Time `json:"pulled"`
	lastNamed time.Time
}

// removedKept is how many removed images status lists.
const removedKept = 20

// imagesDue returns the images not named for grace at now, sorted, and when the next one
// becomes due (zero: none).
func imagesDue(lastNamed map[string]time.Time, now time.Time, grace time.Duration) (due []string, wake time.Time) {
	for ref, t := range lastNamed {
		if at := t.Add(grace); now.Before(at) {
			wake = earliest(wake, at)
		} else {
			due = append(due, ref)
		}
	}
	sort.Strings(due)
	return due, wake
}

// notePulled records an image this daemon pulled: it may collect it later.
func (d *Daemon) notePulled(ref string) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pulledImages[ref] == nil {
		d.pulledImages[ref] = &pulledImage{Pulled: now.UTC(), lastNamed: now}
	}
	if err := d.disk.savePulled(d.pulledImages); err != nil {
		d.log.Warn("persist pulled images", "err", err)
	}
}

// collectImages removes the pulled images no assignment named for the grace period and
// no container uses; it returns when the next one is due.
func (d *Daemon) collectImages(ctx context.Context, p *pass) time.Time {
	if len(p.relErr) > 0 {
		return time.Time{} // an unreadable release may name any image: keep them all
	}
	named := map[string]bool{}
	for _, rel := range p.releases {
		named[rel.Image] = true
	}
	d.mu.Lock()
	last := map[string]time.Time{}
	for ref, im := range d.pulledImages {
		if named[ref] {
			im.lastNamed = p.now
		}
		last[ref] = im.lastNamed
	}
	d.mu.Unlock()
	due, wake := imagesDue(last, p.now, d.cfg.ImageGCGrace)
	if len(due) == 0 {
		return wake
	}

	list, err := d.docker.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		p.fail(fmt.Errorf("image gc: list containers: %w", err))
		return wake
	}
	inUse := map[string]bool{}
	for _, c := range list {
		inUse[c.ImageID], inUse[c.Image] = true, true
	}
	var removed []state.RemovedImage
	gone := map[string]bool{}
	used := map[string]bool{}
	for _, ref := range due {
		info, err := d.docker.ImageInspect(ctx, ref)
		if errdefs.IsNotFound(err) {
			gone[ref] = true // removed by someone else
			continue
		}
		if err != nil {
			p.fail(fmt.Errorf("image gc: inspect %s: %w", ref, err))
			continue
		}
		if inUse[info.ID] || inUse[ref] {
			used[ref] = true
			continue
		}
		if _, err := d.docker.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true}); err != nil {
			if errdefs.IsNotFound(err) {
				gone[ref] = true
			} else if !errdefs.IsConflict(err) { // a container was created from it meanwhile
				p.fail(fmt.Errorf("image gc: remove %s: %w", ref, err))
			}
			continue
		}
		gone[ref] = true
		removed = append(removed, state.RemovedImage{Image: ref, Bytes: info.Size, Removed: time.Now().UTC()})
		d.log.Info("image removed", "image", ref, "bytes", info.Size, "unnamed_for", p.now.Sub(last[ref]).Round(time.Second))
		d.pulls.forget(ref)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	for ref := range gone {
		delete(d.pulledImages, ref)
	}
	for ref := range used {
		// In use counts as named: looked at again a grace period from now.
		if im := d.pulledImages[ref]; im != nil {
			im.lastNamed = p.now
			wake = earliest(wake, p.now.Add(d.cfg.ImageGCGrace))
		}
	}
	d.imagesRemoved = append(d.imagesRemoved, removed...)
	if n := len(d.imagesRemoved); n > removedKept {
		d.imagesRemoved = d.imagesRemoved[n-removedKept:]
	}
	if len(gone) > 0 {
		if err := d.disk.savePulled(d.pulledImages); err != nil {
			d.log.Warn("persist pulled images", "err", err)
		}
	}
	return wake
}
