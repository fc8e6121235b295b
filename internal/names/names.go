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

// Installations: several gilliam-sync installations may share one Consul cluster, each
// under its own KV prefix. Everything one registers in the catalog carries its
// installation, in meta (MetaInstallation) and as a tag (InstallationTag), and each reads
// only its own: hosts, instances, health.

// DefaultInstallation is the installation of the default prefix, gilliam/.
const DefaultInstallation = "gilliam"

// MetaInstallation is the service meta key that holds the installation.
const MetaInstallation = "gilliam-installation"

// Installation names the installation of a KV prefix: the prefix without its final slash,
// other slashes as dashes ("gilliam/" is "gilliam", "teams/a/" is "teams-a").
func Installation(prefix string) string {
	p := strings.Trim(prefix, "/")
	if p == "" {
		return DefaultInstallation
	}
	return strings.ReplaceAll(p, "/", "-")
}

// InstallationTag is the tag every registration of an installation carries.
func InstallationTag(installation string) string { return installationTagPrefix + installation }

const installationTagPrefix = "gilliam-installation-"

// InstallationOf is the installation a registration's meta value names: the default one
// when it names none (a registration made before installations were named).
func InstallationOf(meta string) string {
	if meta == "" {
		return DefaultInstallation
	}
	return meta
}

// InstallationOfTags is the installation a registration's tags name, the default one when
// none does.
func InstallationOfTags(tags []string) string {
	for _, t := range tags {
		if inst, ok := strings.CutPrefix(t, installationTagPrefix); ok {
			return inst
		}
	}
	return DefaultInstallation
}

// HostServiceIDIn and HostCheckIDIn are HostServiceID and HostCheckID of an installation:
// the same for the default one, qualified by the installation for any other, so that two
// installations' host daemons on one Consul agent never share a registration.
func HostServiceIDIn(installation, host string) string {
	if installation == DefaultInstallation {
		return HostServiceID(host)
	}
	return HostService + "-" + installation + "-" + host
}

func HostCheckIDIn(installation, host string) string {
	if installation == DefaultInstallation {
		return HostCheckID(host)
	}
	return "gilliam-host-alive-" + installation + "-" + host
}

// NetworkName is the Docker network of a formation's instances on one host: each
// formation (each preview too) on a bridge of its own, per host, so that host daemons
// sharing an engine keep theirs apart.
func NetworkName(host, formation string) string { return "gilliam-" + host + "--" + formation }

// VolumePrefix starts the name of every instance volume.
const VolumePrefix = "gilliam-vol-"

// Volume is the Docker volume that keeps one path of one instance slot (the index-th
// instance of a service, whatever its release) on a host. The host keeps two host daemons
// sharing an engine apart; the dots keep (a-b, c) and (a, b-c) apart; the path is hashed,
// since it may hold any character.
func Volume(host, formation, service string, index int, path string) string {
	sum := sha256.Sum256([]byte(path))
	return fmt.Sprintf("%s%s.%s.%s.%d.%s", VolumePrefix, host, formation, service, index, hex.EncodeToString(sum[:4]))
}

// Slot names an instance slot: the index-th instance of a service, whatever its release.
func Slot(service string, index int) string { return fmt.Sprintf("%s/%d", service, index) }

// InstanceSlot is the formation-service-index part of an instance ID (InstanceID without
// its release), and false for an ID that is not an instance's.
func InstanceSlot(id string) (string, bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", false
	}
	j := strings.LastIndexByte(id[:i], '-')
	if j < 0 {
		return "", false
	}
	return id[:j] + id[i:], true
}

// ReleaseTaskID is the ID of the one-off task that runs a release's release phase: the
// release's short ID, so the same release never runs it twice under two names.
func ReleaseTaskID(formation, service, release string) string {
	return fmt.Sprintf("%s-%s-%s-release", formation, service, shortID(release))
}
