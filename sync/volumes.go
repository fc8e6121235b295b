package sync

import (
	"maps"
	"slices"

	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Volumes: an instance of a service with volumes is pinned to the host that holds its
// slot's volumes (state.FormationVolumes), recorded when the slot is first placed, in the
// same transaction as the assignment that places it. Placement treats the pin as a hard
// constraint (placement/pin.go): on host loss the instance is unplaced, with the host in
// the reason, rather than started empty elsewhere. Only a person moves a slot
// (`gilliam-sync volumes move`, which rewrites its host) or removes it (`volumes rm`).

// volumesOf is the volumes an instance's release keeps, nil for none or an unknown release.
func volumesOf(w *World, inst state.Instance) []state.Volume {
	if rel := w.KV.Releases[inst.Formation][inst.Release]; rel != nil {
		return rel.Volumes
	}
	return nil
}

// pinOf is the host an instance must run on: its slot's, when the slot is recorded.
func pinOf(w *World, inst state.Instance) string {
	if len(volumesOf(w, inst)) == 0 {
		return ""
	}
	if v := w.KV.Volumes[inst.Formation]; v != nil {
		return v.Slots[state.Slot(inst.Service, inst.Index)].Host
	}
	return ""
}

// newSlots records the slots of the instances placed for the first time on a host, for
// the services with volumes: per formation, the records to write (check-and-set on the
// snapshot's index).
func newSlots(w *World, started []state.Instance, hosts map[string]string) map[string]*state.FormationVolumes {
	out := map[string]*state.FormationVolumes{}
	for _, inst := range started {
		vols := volumesOf(w, inst)
		if len(vols) == 0 {
			continue
		}
		key := state.Slot(inst.Service, inst.Index)
		cur := w.KV.Volumes[inst.Formation]
		if cur != nil {
			if s, ok := cur.Slots[key]; ok && s.Host == hosts[inst.ID] && samePaths(s.Paths, vols) {
				continue
			}
		}
		doc := out[inst.Formation]
		if doc == nil {
			doc = &state.FormationVolumes{Formation: inst.Formation, Slots: map[string]state.VolumeSlot{}}
			if cur != nil {
				maps.Copy(doc.Slots, cur.Slots)
			}
			out[inst.Formation] = doc
		}
		slot := doc.Slots[key]
		if slot.Host != hosts[inst.ID] || slot.Created.IsZero() {
			slot.Created = w.Now.UTC()
		}
		slot.Service, slot.Index, slot.Host = inst.Service, inst.Index, hosts[inst.ID]
		slot.Paths = mergePaths(slot.Paths, vols)
		doc.Slots[key] = slot
	}
	return out
}

// mergePaths keeps the paths a slot had (their volumes stay on the host) and adds new ones.
func mergePaths(have, want []state.Volume) []state.Volume {
	out := slices.Clone(have)
	for _, v := range want {
		i := slices.IndexFunc(out, func(o state.Volume) bool { return o.Path == v.Path })
		if i < 0 {
			out = append(out, v)
		} else {
			out[i].Size = v.Size
		}
	}
	return out
}

func samePaths(have, want []state.Volume) bool {
	return slices.Equal(mergePaths(have, want), have)
}

// taskInstances are the running release phases as instances for placement: placed like
// an instance of their release, kept where they were assigned.
func taskInstances(w *World) ([]placement.Instance, map[string]state.Task) {
	tasks := map[string]state.Task{}
	var out []placement.Instance
	for _, t := range releaseTasks(w) {
		var res placement.Resources
		if rel := w.KV.Releases[t.Formation][t.Release]; rel != nil {
			res = placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory}
		}
		var cs []placement.Constraint
		if d := w.KV.Desired[t.Formation]; d != nil {
			cs = constraints(d.Services[t.Service].Constraints)
		}
		tasks[t.ID] = t
		out = append(out, placement.Instance{ID: t.ID, Formation: t.Formation, Service: t.Service + "/release", Release: t.Release,
			Resources: res, Constraints: cs})
	}
	return out, tasks
}

// volumesToRemove carries a host's pending volume removals into its new assignment,
// dropping those the host no longer reports.
func volumesToRemove(w *World, host string) []string {
	a := w.KV.Assignments[host]
	if a == nil || len(a.RemoveVolumes) == 0 {
		return nil
	}
	hs := w.KV.HostStatus[host]
	if hs == nil {
		return a.RemoveVolumes
	}
	present := map[string]bool{}
	for _, v := range hs.Volumes {
		present[v.Name] = true
	}
	var out []string
	for _, name := range a.RemoveVolumes {
		if present[name] || hs.Updated.Before(a.Updated) {
			out = append(out, name)
		}
	}
	return out
}
