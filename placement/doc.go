// Package placement decides which host runs which instance. Plan is a pure function of the
// desired instances, the hosts, the current assignments and the time: the same input gives
// the same Result, and the caller applies it.
//
// It imports only the standard library (make check enforces this): no Docker, Consul, go-git
// or pack.
package placement
