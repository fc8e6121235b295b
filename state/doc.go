// Package state is the contract between the control plane (sync) and the hosts (hostd): the
// desired-state documents (releases, desired formations, assignments, host status) and the
// layout of their keys in Consul KV.
//
// The types and the key layout are pure; the Consul-backed store that reads, watches and
// writes them with check-and-set is in this package too, behind the Consul API only. It must
// not import Docker, go-git, pack, or sync, build, hostd and gitwatch.
package state
