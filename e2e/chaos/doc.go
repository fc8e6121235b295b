// Package chaos holds the chaos tests: a real multi-host cluster (internal/cluster: a
// network namespace, a Docker engine, a Consul client agent and a host daemon per host,
// three Consul servers, two sync daemons) and the failures real clusters meet, each test
// printing what it measured: a host losing power, a host partitioned and healed, the Consul
// server leader killed, the sync leader killed, the registry gone, each during or after a
// roll-out.
//
// They need root and take minutes, so they run with `make chaos` (GILLIAM_CHAOS=1) and skip
// otherwise, saying so. Like e2e, the package has no code of its own.
package chaos
