package hostd

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Consul registrations of instances carry TagInstance, and the host in their meta: what a
// host daemon finds on its agent with both is its own.
const (
	TagInstance = "gilliam"
	// MetaRegistration holds a hash of the registration as the host daemon made it, so
	// comparing the agent's services with what should be there takes one call, and an
	// unchanged registration is never made again (a restarted daemon leaves it alone).
	MetaRegistration = "gilliam-registration"
)

// FailuresBeforeCritical is how many checks in a row a passing instance fails before
// Consul counts it as failing.
const FailuresBeforeCritical = 2

// registration is the Consul registration of a running instance whose primary port is
// published on hostPort: its check is the release's (TCP on the primary port by default),
// and a check critical for longer than deregisterAfter removes it from the catalog, so the
// instances of a dead host leave it too.
func registration(installation, host, advertise string, inst state.Instance, rel *state.Release, hostPort int, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	addr := net.JoinHostPort(advertise, strconv.Itoa(hostPort))
	reg := &api.AgentServiceRegistration{
		ID:      state.RegistrationID(host, inst.ID),
		Name:    state.ServiceName(inst.Formation, inst.Service),
		Address: advertise,
		Port:    hostPort,
		Tags:    []string{TagInstance, names.InstallationTag(installation), "release-" + inst.Release},
		Meta: map[string]string{
			"formation": inst.Formation,
			"service":   inst.Service,
			"release":   inst.Release,
			"commit":    rel.Commit,
			"image":     rel.Image,
			"instance":  inst.ID,
			"host":      host,

			names.MetaInstallation: installation,
		},
	}
	if rel.Internal {
		reg.Tags = append(reg.Tags, "internal")
	}
	interval, timeout := rel.Check.Interval, rel.Check.Timeout
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	check := &api.AgentServiceCheck{
		CheckID:                        state.CheckID(host, inst.ID),
		Interval:                       interval.String(),
		Timeout:                        timeout.String(),
		DeregisterCriticalServiceAfter: deregisterAfter.String(),
		// One slow answer (a busy host, a pause of the collector) does not take a passing
		// instance out of the router: it takes two failures in a row (Kubernetes' readiness
		// probes take three). A new instance is critical until its first success.
		FailuresBeforeCritical: FailuresBeforeCritical,
	}
	switch {
	case !checked(rel):
		// Healthy as soon as it runs: the host daemon deregisters it when it does not.
	case rel.Check.Type == "http":
		check.Name = "HTTP GET " + rel.Check.Path
		check.HTTP = "http://" + addr + rel.Check.Path
		reg.Check = check
	default:
		check.Name = "TCP " + addr
		check.TCP = addr
		reg.Check = check
	}
	return sealed(reg)
}

// checked says whether a release's instances have a check: not with `check: none`, and not
// without a port to check.
func checked(rel *state.Release) bool { return rel.Check.Type != "none" && len(rel.Ports) > 0 }

// serviceDefinition is a registration as the agent is sent it: the API's type lacks the
// check's DisableRedirects, which the agent has understood since Consul 1.15.
type serviceDefinition struct {
	*api.AgentServiceRegistration
	Check *checkDefinition `json:",omitempty"` // shadows the embedded Check
}

type checkDefinition struct {
	*api.AgentServiceCheck
	// DisableRedirects keeps an HTTP check from following a redirect: an instance must not
	// be able to point its check at another URL (Consul's own API, say) and have the
	// agent's answer show in the check's output. A 3xx answer fails the check.
	DisableRedirects bool `json:",omitempty"`
}

// definition is reg as the agent is sent it: an HTTP check never follows redirects.
func definition(reg *api.AgentServiceRegistration) serviceDefinition {
	def := serviceDefinition{AgentServiceRegistration: reg}
	if reg.Check != nil {
		def.Check = &checkDefinition{AgentServiceCheck: reg.Check, DisableRedirects: reg.Check.HTTP != ""}
	}
	return def
}

// sealed sets MetaRegistration to the hash of everything else in reg, as the agent is
// sent it.
func sealed(reg *api.AgentServiceRegistration) *api.AgentServiceRegistration {
	delete(reg.Meta, MetaRegistration)
	b, err := json.Marshal(definition(reg)) // map keys sorted: the same registration, the same bytes
	if err != nil {
		panic("hostd: marshal registration: " + err.Error()) // plain data: cannot fail
	}
	sum := sha256.Sum256(b)
	reg.Meta[MetaRegistration] = hex.EncodeToString(sum[:8])
	return reg
}

// registrationChanges compares the registrations that should be on the agent with the
// ones of ours it has: what to register (missing or different) and what to deregister
// (ours, but not wanted: a stale registration of an instance that stopped or left). A nil
// registration in want keeps whatever the agent has for that instance (a running instance
// whose release cannot be read now).
func registrationChanges(want map[string]*api.AgentServiceRegistration, have map[string]*api.AgentService) (register []*api.AgentServiceRegistration, deregister []string) {
	for id, reg := range want {
		if reg == nil {
			continue
		}
		if s, ok := have[id]; !ok || s.Meta[MetaRegistration] != reg.Meta[MetaRegistration] {
			register = append(register, reg)
		}
	}
	for id := range have {
		if _, ok := want[id]; !ok {
			deregister = append(deregister, id)
		}
	}
	sort.Slice(register, func(i, j int) bool { return register[i].ID < register[j].ID })
	sort.Strings(deregister)
	return register, deregister
}
