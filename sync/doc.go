// Package sync is the control plane's reconcile loop: a new commit becomes builds, builds
// become releases, releases become a desired formation, and placement turns that into host
// assignments written to Consul. One sync daemon leads through a Consul lock.
//
// It may import every other package of this module except cmd. Inside this package the
// standard library's sync is imported as stdsync.
package sync
