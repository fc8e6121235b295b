package hostd

import (
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// ServiceName is the Consul service an instance registers as: formation and service,
// joined. Both are DNS labels, so the name is one too.
func ServiceName(formation, service string) string { return formation + "-" + service }

// registration is the Consul registration of a running instance whose primary port is
// published on hostPort: its check is the release's (TCP on the primary port by default),
// and a check critical for longer than deregisterAfter removes it from the catalog, so the
// instances of a dead host leave it too.
func registration(host, advertise string, inst state.Instance, rel *state.Release, hostPort int, deregisterAfter time.Duration) *api.AgentServiceRegistration {
	addr := net.JoinHostPort(advertise, strconv.Itoa(hostPort))
	reg := &api.AgentServiceRegistration{
		ID:      inst.ID,
		Name:    ServiceName(inst.Formation, inst.Service),
		Address: advertise,
		Port:    hostPort,
		Tags:    []string{"gilliam", "release-" + inst.Release},
		Meta: map[string]string{
			"formation": inst.Formation,
			"service":   inst.Service,
			"release":   inst.Release,
			"commit":    rel.Commit,
			"image":     rel.Image,
			"instance":  inst.ID,
			"host":      host,
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
		CheckID:                        "instance-" + inst.ID,
		Interval:                       interval.String(),
		Timeout:                        timeout.String(),
		DeregisterCriticalServiceAfter: deregisterAfter.String(),
	}
	switch rel.Check.Type {
	case "none":
		return reg
	case "http":
		check.Name = "HTTP GET " + rel.Check.Path
		check.HTTP = "http://" + addr + rel.Check.Path
	default:
		check.Name = "TCP " + addr
		check.TCP = addr
	}
	reg.Check = check
	return reg
}
