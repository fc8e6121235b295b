package hostd

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// formationNet is a formation's bridge network on this host: its instances' containers
// are on it and on no other, and its gateway (the host's address on the bridge) is where
// they reach their siblings, through the sibling proxy.
type formationNet struct {
	Name    string
	Gateway net.IP
	Subnet  *net.IPNet
}

// contains says whether ip is on the network: the sibling proxy answers only them.
func (n formationNet) contains(ip net.IP) bool { return n.Subnet != nil && n.Subnet.Contains(ip) }

// network returns the formation's network on this host, creating it the first time.
// Networks carry our labels, the host's among them: only ours are ever removed.
func (d *Daemon) network(ctx context.Context, formation string) (formationNet, error) {
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if n, ok := d.nets[formation]; ok {
		return n, nil
	}
	name := names.NetworkName(d.cfg.ID, formation)
	info, err := d.docker.NetworkInspect(ctx, name, network.InspectOptions{})
	if errdefs.IsNotFound(err) {
		cctx, cancel := settled(ctx)
		_, err = d.docker.NetworkCreate(cctx, name, network.CreateOptions{
			Driver: "bridge",
			Labels: map[string]string{LabelManaged: "gilliam-sync", LabelHost: d.cfg.ID, LabelFormation: formation},
		})
		cancel()
		if err != nil && !errdefs.IsConflict(err) {
			return formationNet{}, fmt.Errorf("create network %s: %w", name, err)
		}
		info, err = d.docker.NetworkInspect(ctx, name, network.InspectOptions{})
	}
	if err != nil {
		return formationNet{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	n, err := netOf(info)
	if err != nil {
		return formationNet{}, err
	}
	d.nets[formation] = n
	d.log.Info("formation network ready", "formation", formation, "network", name, "gateway", n.Gateway.String(), "subnet", n.Subnet.String())
	return n, nil
}

func netOf(info network.Inspect) (formationNet, error) {
	for _, c := range info.IPAM.Config {
		_, subnet, err := net.ParseCIDR(c.Subnet)
		gw := net.ParseIP(c.Gateway)
		if err != nil || gw == nil || gw.To4() == nil {
			continue
		}
		return formationNet{Name: info.Name, Gateway: gw, Subnet: subnet}, nil
	}
	return formationNet{}, fmt.Errorf("network %s: no IPv4 subnet with a gateway", info.Name)
}

// attach puts an instance's container on its formation's network, gives it the names of
// its siblings (each the network's gateway, where the sibling proxy listens) and their
// <S>_ADDR variables, and publishes an internal service's ports nowhere: its instances are
// reached through the sibling proxies only.
func attach(cfg *container.Config, hc *container.HostConfig, rel *state.Release, n formationNet) {
	hc.NetworkMode = container.NetworkMode(n.Name)
	if rel.Internal {
		hc.PortBindings = nil
	}
	set := map[string]bool{}
	for _, e := range cfg.Env {
		k, _, _ := strings.Cut(e, "=")
		set[k] = true
	}
	for _, s := range rel.Siblings {
		hc.ExtraHosts = append(hc.ExtraHosts, s.Service+":"+n.Gateway.String())
		if v := AddrVar(s.Service); !set[v] && len(s.Ports) > 0 {
			// The release's env wins: it may point a service at something outside.
			cfg.Env = append(cfg.Env, v+"="+net.JoinHostPort(s.Service, strconv.Itoa(s.Ports[0].Listen)))
		}
	}
	sort.Strings(cfg.Env)
}

// AddrVar is the variable holding a sibling's address: STORE_ADDR for store, its name
// upper-cased with dashes as underscores.
func AddrVar(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_ADDR"
}

// networkIP is a container's address on its formation's network ("" when not on it).
func networkIP(networks map[string]*network.EndpointSettings, host, formation string) string {
	if e := networks[names.NetworkName(host, formation)]; e != nil {
		return e.IPAddress
	}
	return ""
}

// pruneNetworks removes the formation networks of this host that no container of ours is
// on any more and no assigned instance needs.
func (d *Daemon) pruneNetworks(ctx context.Context, keep map[string]bool) {
	list, err := d.docker.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelHost+"="+d.cfg.ID))})
	if err != nil {
		d.log.Debug("list networks", "err", err)
		return
	}
	for _, n := range list {
		f := n.Labels[LabelFormation]
		if f == "" || keep[f] {
			continue
		}
		if err := d.docker.NetworkRemove(ctx, n.ID); err != nil && !errdefs.IsNotFound(err) {
			d.log.Debug("remove network", "network", n.Name, "err", err) // a container still on it
			continue
		}
		d.netMu.Lock()
		delete(d.nets, f)
		d.netMu.Unlock()
		d.log.Info("formation network removed", "formation", f, "network", n.Name)
	}
}

// createTimeout bounds a Docker call that creates a container, a network or a volume.
const createTimeout = time.Minute

// settled is the context for a Docker call that creates something: it is not cancelled
// when the daemon stops, so the call returns only once the engine has answered. The engine
// carries out a create whose request was cancelled (seen: a formation network created
// after the daemon had stopped and its test had removed what it knew of), and the daemon
// would stop without knowing of an object that exists.
func settled(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
}
