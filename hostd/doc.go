// Package hostd is the host daemon: it watches its own assignment in Consul, pulls images,
// converges Docker containers to the assignment, registers every instance in Consul's
// catalog with a health check, restarts what crashes, and keeps running what it has when
// Consul, the registry or the daemon itself goes away. docs/hostd.md is the user's guide.
//
// Where to read: Daemon.Run starts the loops (daemon.go); watch.go follows the assignment
// with blocking queries; a converge pass (reconcile.go) observes containers and the
// agent, decides what to do with the pure function decide (plan.go), then applies it;
// pull.go pulls each image once (with the registry credentials it is given) and
// imagegc.go removes those no assignment names any more; container.go is the container an
// instance gets, least privilege by default; register.go and status.go are what Consul is
// told. network.go gives each formation a network of its own on the host; siblings.go is
// the sibling proxy instances reach their formation's other services through by name, and
// mesh.go the mutual-TLS listener other hosts' proxies reach this host's instances through
// (docs/networking.md).
//
// It may import the Docker client, the Consul API and state. It must not import sync, build
// or gitwatch (make check enforces this): a host knows its assignment, not how it was made.
package hostd
