package names

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// The naming contract between the control plane, the host daemons, the build cache and
// Consul. Every name that one component makes and another finds is made here, once.
//
// Formation and service names are DNS labels (lowercase letters, digits, dashes), release
// IDs are hex, host IDs are labels too: so each name below is a valid Consul service name,
// container name or volume name.

// ServiceName is the Consul service an instance registers as: formation and service,
// joined by a dash. Both are DNS labels, so the name is one too; ServiceNameConflicts tells
// the joins that collide.
func ServiceName(formation, service string) string { return formation + "-" + service }

// RegistrationID is the ID of an instance's registration on its host's agent: the
// instance and the host, so two hosts sharing an agent (several host daemons on one
// machine, or a host that comes back while its moved instance runs elsewhere) never take
// each other's registrations.
func RegistrationID(host, instance string) string { return instance + "@" + host }

// ParseRegistrationID splits a registration ID into instance and host; ok is false for
// an ID that is not an instance's.
func ParseRegistrationID(id string) (instance, host string, ok bool) {
	instance, host, ok = strings.Cut(id, "@")
	return instance, host, ok && instance != "" && host != ""
}

// CheckID is the ID of an instance's check on its host's agent.
func CheckID(host, instance string) string { return "instance-" + RegistrationID(host, instance) }

// ContainerName is the Docker name of an instance's container on a host.
func ContainerName(host, instance string) string { return "gilliam-" + host + "-" + instance }

// HostServiceID and HostCheckID name a host's liveness registration and its TTL check.
func HostServiceID(host string) string { return HostService + "-" + host }

// HostService is the Consul service every host daemon registers for itself, with a TTL
// check it keeps passing: the catalog's list of hosts and their liveness.
const HostService = "gilliam-host"

func HostCheckID(host string) string { return "gilliam-host-alive-" + host }

// CacheVolumePrefix starts the name of every build cache volume.
const CacheVolumePrefix = "gilliam-cache-"

// CacheVolume is the Docker volume that keeps a service's build cache between builds, of
// one kind (build or launch). scope keeps two installations sharing an engine (or two
// tests) apart: an installation's is its registry, whose hash is in the name. The dots keep
// (a-b, c) and (a, b-c) apart: labels have no dots.
func CacheVolume(scope, formation, service, kind string) string {
	sum := sha256.Sum256([]byte(strings.TrimSuffix(scope, "/")))
	return fmt.Sprintf("%s%s.%s.%s.%s", CacheVolumePrefix, hex.EncodeToString(sum[:4]), formation, service, kind)
}

func shortID(release string) string {
	if len(release) > 8 {
		return release[:8]
	}
	return release
}

// InstanceID is the ID of the index-th instance of a release. Formation and service names
// are DNS labels and release IDs are hex, so the ID is a DNS label, and part of its
// container's name and of its registration's ID, with the host (ContainerName,
// RegistrationID).
func InstanceID(formation, service, release string, index int) string {
	return fmt.Sprintf("%s-%s-%s-%d", formation, service, shortID(release), index)
}

// ReservedFormations are the names a formation may not take, because the platform's own
// Consul services start with them (gilliam-host, the hosts' liveness service).
var ReservedFormations = []string{"gilliam"}

// ServiceNameConflict says why a formation's Consul service names cannot be used: one is
// the platform's own or too long for a DNS label. others are the (formation, service) pairs
// of the other formations known, to find the joins that collide ("a-b" + "c" and "a" +
// "b-c" are both a-b-c). It returns "" when every name is fine.
func ServiceNameConflict(formation string, services []string, others map[string][]string) string {
	for _, r := range ReservedFormations {
		if formation == r || strings.HasPrefix(formation, r+"-") {
			return fmt.Sprintf("formation %s: names starting with %q are the platform's own in Consul; choose another formation name", formation, r)
		}
	}
	taken := map[string]string{}
	for f, svcs := range others {
		if f == formation {
			continue
		}
		for _, s := range svcs {
			taken[ServiceName(f, s)] = f + "/" + s
		}
	}
	for _, s := range services {
		name := ServiceName(formation, s)
		if n := len(name); n > 63 {
			return fmt.Sprintf("service %s of formation %s: the Consul service name %s is %d characters, over DNS's 63: shorten the formation or service name", s, formation, name, n)
		}
		if other, ok := taken[name]; ok {
			return fmt.Sprintf("service %s of formation %s: its Consul service name %s is already that of %s; rename the formation or the service", s, formation, name, other)
		}
	}
	return ""
}
