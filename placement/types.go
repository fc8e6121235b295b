package placement

import "time"

// Resources is a reservation (on an Instance) or a capacity (on a Host). Zero means "none" on
// an instance and "unknown, so unlimited" on a host: a host whose daemon could not measure its
// memory should not refuse every instance, and an instance that declares nothing reserves
// nothing. Negative values are treated as zero.
type Resources struct {
	CPU    int64 // millicores
	Memory int64 // bytes
}

// Op is how a Constraint compares a host label with its value.
type Op string

const (
	// OpEqual holds when the label is present and equal to the value.
	OpEqual Op = "="
	// OpNotEqual holds when the label is absent or differs from the value: "not in eu" is
	// true of a host that has no zone at all.
	OpNotEqual Op = "!="
	// OpRegexp holds when the label is present and matches the value, a Go regexp. Like
	// Nomad's, it is unanchored: write ^eu-.*$ to match the whole label.
	OpRegexp Op = "~="
)

// Constraint restricts an instance to hosts whose labels satisfy it. All constraints of an
// instance must hold.
type Constraint struct {
	Key   string
	Op    Op
	Value string
}

// String is the form reasons show, e.g. "zone=eu".
func (c Constraint) String() string { return c.Key + string(c.Op) + c.Value }

// Instance is one copy of a release of a service, the unit Plan places.
type Instance struct {
	// ID is stable and unique (formation-service-release-index, state.InstanceID); the
	// caller makes it. Plan matches desired instances with current assignments by ID only:
	// which host runs it is the assignment's, not part of the ID (host daemons add the host
	// to the container name and the Consul registration ID they make from it).
	ID                          string
	Formation, Service, Release string
	Resources                   Resources
	Constraints                 []Constraint
	// DistinctHosts asks for at most one instance of this (formation, service), whatever the
	// release, per host. Two instances of a service share a host only if neither asks.
	DistinctHosts bool
	// SpreadLabel spreads the service's instances across the values of this host label (e.g.
	// "zone") before spreading them across hosts. Hosts without the label count as one more
	// value. Honoured in binpack mode too, since the service asked for it.
	SpreadLabel string
	// Host pins the instance to one host: its volumes are there (see pin.go). It runs on
	// that host or nowhere: a dead or unknown pinned host leaves it unplaced, with a
	// reason that says so, rather than started elsewhere without its data.
	Host string
}

// Host is a machine that runs instances.
type Host struct {
	ID       string
	Capacity Resources
	Labels   map[string]string
	// CriticalSince is zero while the host's liveness check passes. A critical host keeps
	// what it runs (it may come back) but gets nothing new; once critical for longer than
	// Options.DeadAfter it is dead and its instances are re-placed.
	CriticalSince time.Time
}

// Options tunes Plan. The zero value spreads, and treats a host as dead as soon as it is
// critical.
type Options struct {
	// Binpack fills the fullest host that fits instead of the emptiest, and no longer spreads
	// a service across hosts (DistinctHosts and SpreadLabel still hold). Spread is the
	// default because a lost host then takes few instances of any one service with it.
	Binpack bool
	// DeadAfter is the grace period: a host critical for longer than this is dead.
	DeadAfter time.Duration
	// Seed breaks ties between equally good hosts. Plan has no other randomness: the same
	// seed and input give the same Result, a different seed may choose other equal hosts.
	Seed int64
}

// Result is what Plan decided. The caller writes the assignment of each host in Changed and
// nothing else.
type Result struct {
	// Assignments is the full new assignment of every host that has any instance, each
	// sorted by instance ID. Only hosts passed to Plan appear here.
	Assignments map[string][]Instance
	// Start lists instances placed on a host they were not on, sorted by instance ID.
	Start []Move
	// Stop lists instances leaving a host: no longer desired, moved off it, or on a dead or
	// unknown host. Sorted by instance ID, then host. An instance that is not desired is known
	// by its ID only, so only Instance.ID is set.
	Stop []Move
	// Unplaced lists desired instances that run nowhere after this plan, sorted by ID, each
	// with a reason that counts why every host refused it.
	Unplaced []Unplaced
	// Changed lists, sorted, the hosts whose assignment differs from current (as a set of
	// instance IDs), including unknown and dead hosts that lost instances.
	Changed []string
}

// Move is an instance arriving on (Start) or leaving (Stop) a host.
type Move struct {
	Instance Instance
	Host     string
}

// Unplaced is a desired instance with no host, and why.
type Unplaced struct {
	Instance Instance
	Reason   string
}
