// Package placement decides which host runs which instance. Plan is a pure function of the
// desired instances, the hosts, the current assignments and the time: the same input gives
// the same Result, and the caller applies it, writing only the hosts in Result.Changed.
//
// Its promises, each checked by a property test: running instances stay where they are
// unless their host died or no longer suits them; nothing goes over a host's capacity, onto
// a host that is not healthy, or against constraints and distinct hosts; no instance is
// left unplaced while some host has room for it; and planning again over a Result changes
// nothing. Every unplaced instance says why, host by host.
//
// Read types.go for the vocabulary, plan.go for the two passes (keep, then place),
// feasible.go for which hosts can take an instance (pin.go for an instance pinned to the
// host of its volumes), score.go for which of them is best,
// and rank.go for how a large cluster is searched without scanning every host.
//
// It imports only the standard library (make check enforces this): no Docker, Consul, go-git
// or pack.
package placement
