package hostd

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// Instance volumes: each path of a service's volumes is a Docker volume per instance
// slot (state.VolumeName), created with our labels when the slot's first instance is
// created here, mounted by every later instance of the slot (of any release), and never
// removed by the daemon unless the assignment lists it in RemoveVolumes (`gilliam-sync
// volumes rm`). Two containers never share one: an instance waits until the container of
// its slot's previous instance is gone.

// Labels of instance volumes, besides LabelManaged, LabelHost, LabelFormation and
// LabelService.
const (
	LabelSlot = "io.gilliam.slot" // the instance index
	LabelPath = "io.gilliam.path" // the path in the container
)

// volumeEngine is what the daemon asks the engine about volumes.
type volumeEngine interface {
	VolumeCreate(ctx context.Context, options volume.CreateOptions) (volume.Volume, error)
	VolumeInspect(ctx context.Context, volumeID string) (volume.Volume, error)
	VolumeList(ctx context.Context, options volume.ListOptions) (volume.ListResponse, error)
	VolumeRemove(ctx context.Context, volumeID string, force bool) error
	DiskUsage(ctx context.Context, options types.DiskUsageOptions) (types.DiskUsage, error)
}

// volumeUsageEvery is how often the space volumes use is measured (the engine walks
// every file of every volume to answer).
const volumeUsageEvery = 5 * time.Minute

// volumeMounts creates the volumes of an instance's slot that do not exist yet, and
// returns the mounts of all of them. user is who the instance runs as: a new volume's root
// is given to it when this daemon can reach the engine's files (it runs beside the engine,
// as root), since a fresh volume belongs to root and the instance runs as nobody or as
// its image's user.
func (d *Daemon) volumeMounts(ctx context.Context, inst state.Instance, rel *state.Release, user string) ([]mount.Mount, error) {
	var mounts []mount.Mount
	for _, v := range rel.Volumes {
		name := state.VolumeName(d.cfg.ID, inst.Formation, inst.Service, inst.Index, v.Path)
		_, err := d.docker.VolumeInspect(ctx, name)
		if errdefs.IsNotFound(err) {
			var vol volume.Volume
			cctx, cancel := settled(ctx)
			vol, err = d.docker.VolumeCreate(cctx, volume.CreateOptions{Name: name, Labels: map[string]string{
				LabelManaged: "gilliam-sync", LabelHost: d.cfg.ID, LabelFormation: inst.Formation, LabelService: inst.Service,
				LabelSlot: strconv.Itoa(inst.Index), LabelPath: v.Path,
			}})
			cancel()
			if err == nil {
				d.log.Info("volume created", "volume", name, "instance", inst.ID, "path", v.Path)
				d.giveVolume(vol, user)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", name, err)
		}
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: name, Target: v.Path})
	}
	return mounts, nil
}

// giveVolume makes a new volume's root belong to user (uid:gid, numeric), when its
// mountpoint is reachable from here.
func (d *Daemon) giveVolume(vol volume.Volume, user string) {
	uidText, gidText, _ := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(uidText)
	gid, err2 := strconv.Atoi(gidText)
	if gidText == "" {
		gid, err2 = uid, err1
	}
	if err1 != nil || err2 != nil || uid == 0 || vol.Mountpoint == "" {
		return // root, or a user name this daemon cannot resolve: the image's own files decide
	}
	if err := os.Chown(vol.Mountpoint, uid, gid); err != nil {
		d.log.Warn("volume not given to the instance's user: the image must own the path", "volume", vol.Name, "user", user, "err", err)
	}
}

// slotsFree holds back the instances whose slot's previous instance still has a
// container here: they share its volumes. The old one is removed in this pass; the next
// pass creates the new one.
func (d *Daemon) slotsFree(p *pass, create []state.Instance, containers []observed) []state.Instance {
	var out []state.Instance
	for _, inst := range create {
		rel := p.releases[inst.Release]
		slot, ok := state.InstanceSlot(inst.ID)
		held := ""
		if rel != nil && len(rel.Volumes) > 0 && ok {
			for _, c := range containers {
				if s, _ := state.InstanceSlot(c.Instance); s == slot && c.Instance != inst.ID {
					held = c.Instance
				}
			}
		}
		if held == "" {
			out = append(out, inst)
			continue
		}
		p.notes[inst.ID] = fmt.Sprintf("waiting for %s to stop: it holds the volumes of this slot", held)
		p.wake = earliest(p.wake, p.now.Add(500*time.Millisecond))
	}
	return out
}

// volumesPass removes the volumes the assignment lists for removal (none in use), and
// lists this host's instance volumes with what they use, for status.
func (d *Daemon) volumesPass(ctx context.Context, p *pass, a *state.Assignment) []state.VolumeStatus {
	wanted := len(a.RemoveVolumes) > 0
	for _, rel := range p.releases {
		wanted = wanted || len(rel.Volumes) > 0
	}
	if !wanted && d.vols.listed && len(d.vols.last) == 0 {
		return nil // no volume here, and none to make: the engine is not asked
	}
	d.vols.listed = true
	list, err := d.docker.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", LabelHost+"="+d.cfg.ID), filters.Arg("label", LabelPath))})
	if err != nil {
		p.fail(fmt.Errorf("list volumes: %w", err))
		return d.vols.last
	}
	remove := map[string]bool{}
	for _, name := range a.RemoveVolumes {
		remove[name] = true
	}
	var out []state.VolumeStatus
	names := map[string]bool{}
	for _, v := range list.Volumes {
		if remove[v.Name] {
			if err := d.docker.VolumeRemove(ctx, v.Name, false); err != nil {
				if d.vols.noteFailure(v.Name) {
					d.log.Warn("volume not removed", "volume", v.Name, "err", err)
				}
			} else {
				d.log.Info("volume removed", "volume", v.Name)
				continue
			}
		}
		index, _ := strconv.Atoi(v.Labels[LabelSlot])
		names[v.Name] = true
		out = append(out, state.VolumeStatus{Name: v.Name, Formation: v.Labels[LabelFormation], Service: v.Labels[LabelService],
			Index: index, Path: v.Labels[LabelPath], Bytes: -1})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	usage := d.vols.usage(ctx, d.docker, p.now, names)
	for i := range out {
		if b, ok := usage[out[i].Name]; ok {
			out[i].Bytes = b
		}
	}
	d.vols.last = out
	return out
}

// volumeMemory is what the daemon remembers of its volumes between passes. Only the
// converge pass (one at a time) touches it.
type volumeMemory struct {
	listed   bool // the engine's volumes were listed once since start
	last     []state.VolumeStatus
	measured time.Time
	sizes    map[string]int64
	failed   map[string]bool
}

func (m *volumeMemory) noteFailure(name string) (first bool) {
	if m.failed == nil {
		m.failed = map[string]bool{}
	}
	first = !m.failed[name]
	m.failed[name] = true
	return first
}

// usage measures what volumes use, at most every volumeUsageEvery unless a volume is new.
func (m *volumeMemory) usage(ctx context.Context, engine volumeEngine, now time.Time, names map[string]bool) map[string]int64 {
	fresh := now.Sub(m.measured) < volumeUsageEvery
	for name := range names {
		if _, ok := m.sizes[name]; !ok {
			fresh = false
		}
	}
	if fresh || len(names) == 0 {
		return m.sizes
	}
	du, err := engine.DiskUsage(ctx, types.DiskUsageOptions{Types: []types.DiskUsageObject{types.VolumeObject}})
	m.measured = now
	if err != nil {
		return m.sizes
	}
	m.sizes = map[string]int64{}
	for _, v := range du.Volumes {
		if v != nil && names[v.Name] {
			size := int64(-1)
			if v.UsageData != nil {
				size = v.UsageData.Size
			}
			m.sizes[v.Name] = size
		}
	}
	return m.sizes
}
