package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// volumes: list a formation's instance volumes, move a slot to another host, remove a
// slot's volumes. The leader pins each slot's instances to the host of its volumes
// (docs/sync.md, "Volumes"); these commands are the only way a slot moves or its data goes.

var volumesCmd = &command{
	name:    "volumes",
	usage:   "FORMATION | move FORMATION SERVICE/INDEX --to HOST | rm FORMATION SERVICE/INDEX [--host HOST]",
	summary: "instance volumes: list them with host and size, move a slot to another host (its data is not copied), remove one",
	run:     runVolumes,
}

func runVolumes(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	to := fs.String("to", "", "move: the host the slot goes to")
	host := fs.String("host", "", "rm: the host whose volumes go (default: the slot's)")
	return manageCommand("volumes", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		switch {
		case len(args) == 1:
			return listVolumes(ctx, st, stdout, args[0])
		case len(args) == 3 && args[0] == "move":
			return moveVolumes(ctx, st, stdout, args[1], args[2], *to)
		case len(args) == 3 && args[0] == "rm":
			return removeVolumes(ctx, st, stdout, args[1], args[2], *host)
		}
		return usageError{"want FORMATION, move FORMATION SERVICE/INDEX --to HOST, or rm FORMATION SERVICE/INDEX"}
	})(ctx)
}

// volumeRow is one volume of a slot, as listed.
type volumeRow struct {
	slot, host, path, name string
	size, used             int64 // -1: unknown
	recorded               bool  // the slot's record names this host
}

func volumeRows(snap *state.Snapshot, formation string) []volumeRow {
	var rows []volumeRow
	seen := map[string]bool{}
	if v := snap.Volumes[formation]; v != nil {
		for key, slot := range v.Slots {
			for _, p := range slot.Paths {
				name := state.VolumeName(slot.Host, formation, slot.Service, slot.Index, p.Path)
				seen[name] = true
				rows = append(rows, volumeRow{slot: key, host: slot.Host, path: p.Path, name: name, size: p.Size, used: -1, recorded: true})
			}
		}
	}
	// Volumes hosts report that no record names (left behind by a move).
	for h, hs := range snap.HostStatus {
		for _, v := range hs.Volumes {
			if v.Formation == formation && !seen[v.Name] {
				rows = append(rows, volumeRow{slot: state.Slot(v.Service, v.Index), host: h, path: v.Path, name: v.Name, size: 0, used: v.Bytes})
			}
		}
	}
	for i := range rows {
		if hs := snap.HostStatus[rows[i].host]; hs != nil {
			for _, v := range hs.Volumes {
				if v.Name == rows[i].name {
					rows[i].used = v.Bytes
				}
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].slot != rows[j].slot {
			return rows[i].slot < rows[j].slot
		}
		return rows[i].name < rows[j].name
	})
	return rows
}

func listVolumes(ctx context.Context, st *state.Store, w io.Writer, formation string) error {
	snap, err := st.Snapshot(ctx, 0, 0)
	if err != nil {
		return err
	}
	rows := volumeRows(snap, formation)
	if len(rows) == 0 {
		fmt.Fprintf(w, "formation %s has no volumes\n", formation)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tHOST\tPATH\tSIZE\tUSED\tVOLUME")
	for _, r := range rows {
		host := r.host
		if !r.recorded {
			host += " (left by a move)"
		}
		size := "-"
		if r.size > 0 {
			size = bytesText(r.size)
		}
		used := "-"
		if r.used >= 0 {
			used = bytesText(r.used)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.slot, host, r.path, size, used, r.name)
	}
	return tw.Flush()
}

// parseSlot reads SERVICE/INDEX.
func parseSlot(s string) (string, int, error) {
	service, index, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(index)
	if !ok || err != nil || n < 0 || service == "" {
		return "", 0, usageError{fmt.Sprintf("%q: name a slot as SERVICE/INDEX, such as db/0", s)}
	}
	return service, n, nil
}

func moveVolumes(ctx context.Context, st *state.Store, w io.Writer, formation, slotArg, to string) error {
	service, index, err := parseSlot(slotArg)
	if err != nil {
		return err
	}
	if to == "" {
		return usageError{"move needs --to HOST"}
	}
	hosts, err := st.Hosts(ctx)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(hosts, func(h state.Host) bool { return h.ID == to }) {
		return fmt.Errorf("no host %q in the catalog", to)
	}
	v, index0, err := st.Volumes(ctx, formation)
	if err != nil {
		return err
	}
	key := state.Slot(service, index)
	slot, ok := v.Slots[key]
	if !ok {
		return fmt.Errorf("formation %s has no volume slot %s", formation, key)
	}
	if slot.Host == to {
		fmt.Fprintf(w, "%s %s is on %s already\n", formation, key, to)
		return nil
	}
	from := slot.Host
	now := time.Now().UTC()
	slot.Host, slot.Created, slot.Moved = to, now, now
	v.Slots[key] = slot
	b := st.NewBatch()
	b.PutVolumes(v, index0)
	if err := st.Apply(ctx, b); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s %s moves to %s: its instance stops on %s and starts there with empty volumes (data is not copied).\n", formation, key, to, from)
	fmt.Fprintf(w, "The volumes on %s stay until: gilliam-sync volumes rm %s %s --host %s\n", from, formation, key, from)
	return nil
}

func removeVolumes(ctx context.Context, st *state.Store, w io.Writer, formation, slotArg, host string) error {
	service, index, err := parseSlot(slotArg)
	if err != nil {
		return err
	}
	snap, err := st.Snapshot(ctx, 0, 0)
	if err != nil {
		return err
	}
	key := state.Slot(service, index)
	slot, recorded := state.VolumeSlot{}, false
	if v := snap.Volumes[formation]; v != nil {
		slot, recorded = v.Slots[key]
	}
	if host == "" {
		if !recorded {
			return fmt.Errorf("formation %s has no volume slot %s (name the host with --host for volumes a move left)", formation, key)
		}
		host = slot.Host
	}
	own := recorded && slot.Host == host
	if own {
		if d := snap.Desired[formation]; d != nil {
			for _, inst := range d.Instances() {
				if inst.Service == service && inst.Index == index {
					return fmt.Errorf("slot %s of %s is in use (instance %s): scale %s below %d first, or remove its volumes from gilliam.yml", key, formation, inst.ID, service, index+1)
				}
			}
		}
	}
	var names []string
	for _, r := range volumeRows(snap, formation) {
		if r.slot == key && r.host == host {
			names = append(names, r.name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no volume of %s %s on host %s", formation, key, host)
	}
	a := snap.Assignments[host]
	if a == nil {
		a = &state.Assignment{Host: host, Instances: []state.Instance{}}
	}
	c := *a
	for _, n := range names {
		if !slices.Contains(c.RemoveVolumes, n) {
			c.RemoveVolumes = append(c.RemoveVolumes, n)
		}
	}
	c.Updated = time.Now().UTC()
	b := st.NewBatch()
	b.PutAssignment(&c, snap.AssignmentIndex(host))
	if own {
		v := snap.Volumes[formation]
		next := &state.FormationVolumes{Formation: formation, Slots: map[string]state.VolumeSlot{}}
		for k, s := range v.Slots {
			if k != key {
				next.Slots[k] = s
			}
		}
		b.PutVolumes(next, snap.VolumesIndex(formation))
	}
	if err := st.Apply(ctx, b); err != nil {
		return err
	}
	fmt.Fprintf(w, "host %s removes %s\n", host, strings.Join(names, ", "))
	return nil
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ci", float64(n)/float64(div), "KMGTPE"[exp])
}

// printPhase shows a service's release phase in status.
func printPhase(w io.Writer, ph *state.PhaseRun) {
	if ph == nil {
		return
	}
	switch ph.State {
	case state.PhasePending:
		fmt.Fprintf(w, "    release phase of %s: pending (runs before its roll-out)\n", short(ph.Release))
	case state.PhaseRunning:
		fmt.Fprintf(w, "    release phase of %s: running (task %s), started %s ago\n", short(ph.Release), ph.Task, time.Since(ph.Started).Round(time.Second))
	case state.PhaseSucceeded:
		fmt.Fprintf(w, "    release phase of %s: succeeded on %s\n", short(ph.Release), orDash(ph.Host))
	case state.PhaseFailed:
		fmt.Fprintf(w, "    release phase of %s: FAILED on %s: %s; the release does not roll out\n", short(ph.Release), orDash(ph.Host), ph.Error)
		if len(ph.Output) > 0 {
			fmt.Fprintln(w, "    its last lines:")
			for _, l := range ph.Output {
				fmt.Fprintf(w, "      %s\n", l)
			}
		}
	}
}
