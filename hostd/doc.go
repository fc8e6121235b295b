// Package hostd is the host daemon: it watches its own assignment in Consul, pulls images,
// converges Docker containers to the assignment, registers every instance in Consul's
// catalog with a health check, and keeps running what it has when Consul is away.
//
// It may import the Docker client, the Consul API and state. It must not import sync, build
// or gitwatch (make check enforces this): a host knows its assignment, not how it was made.
package hostd
