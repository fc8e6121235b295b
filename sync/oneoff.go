package sync

import (
	"fmt"

	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// OneOffHost chooses the host a one-off process of a release runs on, as the scheduler
// would place one more instance of its service: the service's constraints, the capacity
// the hosts' assignments leave, the hosts alive; for a release with config vars, only the
// hosts that hold its sealed copy (those that run it). The release phase, which runs a
// release before any host does, must seal its config vars to the host it picks first. It is pure, like Reconcile: `gilliam-sync
// run` and the release phase call it with the world they read. What runs one-offs is not
// in the assignments: a host counts only its instances.
func OneOffHost(w *World, formation, service, release string, opts placement.Options) (string, error) {
	ds := w.KV.Desired[formation]
	if ds == nil {
		return "", fmt.Errorf("no formation %q", formation)
	}
	svc, ok := ds.Services[service]
	if !ok {
		return "", fmt.Errorf("formation %s has no service %q", formation, service)
	}
	var desired []placement.Instance
	current := map[string][]string{}
	for h, a := range w.KV.Assignments {
		for _, inst := range a.Instances {
			var res placement.Resources
			if rel := w.KV.Releases[inst.Formation][inst.Release]; rel != nil {
				res = placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory}
			}
			desired = append(desired, placement.Instance{ID: inst.ID, Formation: inst.Formation, Service: inst.Service, Release: inst.Release, Resources: res})
			current[h] = append(current[h], inst.ID)
		}
	}
	one := placement.Instance{ID: "one-off", Formation: formation, Service: service, Release: release,
		Constraints: constraints(svc.Constraints)}
	if rel := w.KV.Releases[formation][release]; rel != nil {
		one.Resources = placement.Resources{CPU: rel.Resources.CPU, Memory: rel.Resources.Memory}
	}
	desired = append(desired, one)
	hosts := placementHosts(w)
	if rel := w.KV.Releases[formation][release]; rel != nil && rel.ConfigDigest != "" {
		// Its config vars are sealed only to the hosts that run it (decideSeals): a host
		// without a copy could not open them.
		sealed := hosts[:0:0]
		for _, h := range hosts {
			if e, key := w.KV.Sealed[h.ID][release], w.KV.HostKeys[h.ID]; e != nil && key != nil && e.Recipient == key.Fingerprint {
				sealed = append(sealed, h)
			}
		}
		if len(sealed) == 0 {
			return "", fmt.Errorf("release %s of %s/%s has config vars, sealed only to the hosts that run it, and none runs it now: scale the service up, or wait for its roll-out", short(release), formation, service)
		}
		hosts = sealed
	}
	res := placement.Plan(desired, hosts, current, w.Now, opts)
	for _, m := range res.Start {
		if m.Instance.ID == one.ID {
			return m.Host, nil
		}
	}
	for _, u := range res.Unplaced {
		if u.Instance.ID == one.ID {
			return "", fmt.Errorf("no host can run a one-off of %s/%s: %s", formation, service, u.Reason)
		}
	}
	return "", fmt.Errorf("no host can run a one-off of %s/%s", formation, service)
}

// OneOffRelease is the release a one-off of a service runs: the one the service settles on
// (its pinned or latest release, see DesiredService.Target).
func OneOffRelease(d *state.Desired, service string) (string, error) {
	ds, ok := d.Services[service]
	if !ok {
		return "", fmt.Errorf("formation %s has no service %q", d.Formation, service)
	}
	if id := ds.Target(); id != "" {
		return id, nil
	}
	return "", fmt.Errorf("service %s of %s has no release yet", service, d.Formation)
}
