package hostd

import (
	"fmt"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// ACLRules is the Consul ACL policy (HCL rules) a host daemon's token needs, and no more:
// its own assignment and status under prefix (state.DefaultPrefix when empty), the
// releases it runs, its liveness registration and its instances' registrations, and its
// own agent's membership (to rejoin the servers after a partition).
// docs/hostd.md explains each rule.
func ACLRules(prefix, host string) string {
	if prefix == "" {
		prefix = state.DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return fmt.Sprintf(`# The host's own documents: its assignment (read) and its status (write).
key "%[1]shosts/%[2]s/assignment" {
  policy = "read"
}
key "%[1]shosts/%[2]s/status" {
  policy = "write"
}
# Its public key and Consul node: what config vars are sealed to, and what the leader
# checks its registration against. No other host's token can write it.
key "%[1]shosts/%[2]s/key" {
  policy = "write"
}
# The config vars of the releases it runs, sealed to its key.
key_prefix "%[1]shosts/%[2]s/sealed/" {
  policy = "read"
}
# Releases, to create containers and register them. They hold no config var's value: those
# are only in the sealed copies above.
key_prefix "%[1]sreleases/" {
  policy = "read"
}
# One-offs (gilliam-sync run, release phases; docs/oneoff.md): its requests (read, and
# delete a detached one's when it ends), their status and output.
key_prefix "%[4]srequests/%[2]s/" {
  policy = "write"
}
key_prefix "%[4]sio/%[2]s/" {
  policy = "write"
}
# Its liveness registration and TTL check.
service %[3]q {
  policy = "write"
}
# Its instances' registrations. Consul grants registrations by service name, and a host
# runs whatever it is assigned: narrow the prefix to the formations the host may run
# (service_prefix "shop-" for the formation shop) when you know them.
service_prefix "" {
  policy = "write"
}
# Its Consul agent: to find the servers (the members list) and rejoin them after a
# partition (agent join). The agent's node name must be the host's id (both default to the
# hostname). Without these rules the host still works; back from a partition it learns that
# its instances moved when Consul's gossip retries the servers (every 30s), not within
# seconds.
agent %[2]q {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
`, prefix, host, state.HostService, strings.TrimSuffix(prefix, "/")+"-run/")
}
