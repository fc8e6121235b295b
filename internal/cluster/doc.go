// Package cluster starts a real multi-host gilliam-sync cluster on this machine for tests:
// each host a Linux network namespace with its own address, its own Docker engine, its own
// Consul client agent and its own `gilliam-sync host` process; three Consul servers; an OCI
// registry every host pulls from; up to two `gilliam-sync sync` daemons. It also does to that
// cluster what happens to real ones: a host powered off, a host partitioned and healed, the
// Consul server leader killed, the sync leader killed, the registry gone and back.
//
// The network, all of it made by the cluster and removed at cleanup:
//
//	root namespace   <prefix>      10.213.X.1/24   Consul servers, the control agent, the
//	                 (veth)                        registry, the sync daemons, the test
//	<prefix>-sw      br0           a bridge (the switch) joining the veths below
//	<prefix>-hN      eth0          10.213.X.(10+N)/24, and no default route: nothing
//	                                               leaves the cluster's network
//
// The switch sits in its own namespace so that bridged traffic never meets the root
// namespace's firewall (Docker's FORWARD policy is DROP). A host's link is its veth on the
// switch: Partition sets it down, Heal up. Only addresses in the /24 the cluster picked
// (one no interface of the machine uses) are ever used.
//
// A host's engine runs as `nsenter --net=/var/run/netns/<ns> dockerd ...` with an empty
// config file, its own data and exec roots, fuse-overlayfs and --insecure-registry for the
// registry's address (ip netns exec would remount sysfs and hide the cgroup mounts); its
// containers are put under the cgroup /<prefix>-hN, so that PowerOff finds and kills them
// with everything else of the host. Files live under /tmp/gilliam-cluster/<prefix>; `make
// clean-cluster` (scripts/clean-cluster.sh) removes what a killed test run left there.
//
// It needs root, ip(8), nsenter(1), dockerd, fuse-overlayfs and the consul binary `make
// tools` builds. Only tests import it; it imports testenv, state and the Consul and Docker
// clients, and nothing of sync/, hostd/ or build/ (it runs the gilliam-sync binary).
package cluster
