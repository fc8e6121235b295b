package hostd

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A host has its own key pair (docs/security.md): the private key in <data>/host.key (0600),
// the public key published in Consul (hosts/<id>/key) with the Consul node the daemon runs
// beside. The leader seals each release's config vars to the key of every host that runs it
// (hosts/<id>/sealed/<release>); the daemon opens its copy when it creates a container.

// hostKey loads the host's key from the data dir, made there at the first start; with no
// data dir, a key in memory.
func hostKey(dataDir string) (*seal.Key, error) {
	if dataDir == "" {
		return seal.Generate()
	}
	k, _, err := seal.LoadKeyFile(filepath.Join(dataDir, "host.key"), true)
	return k, err
}

// publishKey writes the host's public key and node to Consul unless they are there already.
// The node is the agent's name; a token without agent read (the agent rule of the host
// policy names the host's ID, which the node name may not be) finds it as the node of the
// host's registration, serviceID, in the catalog.
func (d *Daemon) publishKey(ctx context.Context, agent *api.Agent, serviceID string) error {
	node, err := agent.NodeName()
	if err != nil {
		if node, err = d.registeredNode(ctx, serviceID); err != nil {
			return fmt.Errorf("find the host's Consul node: %w", err)
		}
	}
	pub := d.key.Public()
	have, err := d.store.HostKey(ctx, d.cfg.ID)
	if err != nil {
		return fmt.Errorf("read host key: %w", err)
	}
	if have != nil && have.Fingerprint == pub.Fingerprint() && have.Node == node {
		return nil
	}
	if err := d.store.PutHostKey(ctx, d.cfg.ID, &state.HostKey{Public: pub.String(), Fingerprint: pub.Fingerprint(), Node: node, Updated: time.Now().UTC()}); err != nil {
		return fmt.Errorf("publish host key: %w", err)
	}
	d.log.Info("host key published", "fingerprint", pub.Fingerprint(), "node", node)
	return nil
}

// errNotSealed says a release's config vars are not (yet) sealed to this host: its
// instances wait, and the next pass asks again.
var errNotSealed = errors.New("config vars not sealed to this host yet")

// withConfig is rel with its config vars, opened from this host's sealed copy: from the
// data dir when kept there, else from Consul (and then kept). A release without config
// vars is returned as it is.
func (d *Daemon) withConfig(ctx context.Context, rel *state.Release) (*state.Release, error) {
	if rel.ConfigDigest == "" {
		return rel, nil
	}
	e, err := d.disk.loadSealed(rel.ID)
	if err != nil {
		d.log.Warn("persisted sealed config unreadable", "release", rel.ID, "err", err)
	}
	if e == nil || e.Recipient != d.key.Public().Fingerprint() {
		ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
		defer cancel()
		if e, err = d.store.Sealed(ctx, d.cfg.ID, rel.ID); err != nil {
			return nil, err
		}
		if e == nil || e.Recipient != d.key.Public().Fingerprint() {
			return nil, fmt.Errorf("release %s: %w", rel.ID, errNotSealed)
		}
		if err := d.disk.saveSealed(e); err != nil {
			d.log.Warn("persist sealed config", "release", rel.ID, "err", err)
		}
	}
	vars, err := d.key.OpenEnv(e.Box)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", rel.ID, err)
	}
	out := *rel
	out.Env = maps.Clone(rel.Env)
	if out.Env == nil {
		out.Env = map[string]string{}
	}
	for _, name := range rel.Config {
		v, ok := vars[name]
		if !ok {
			return nil, fmt.Errorf("release %s: its sealed config vars lack %s", rel.ID, name)
		}
		out.Env[name] = v
	}
	return &out, nil
}

// registeredNode is the node the catalog holds the host's registration on: the only one,
// or the one whose address is the host's advertise address.
func (d *Daemon) registeredNode(ctx context.Context, serviceID string) (string, error) {
	entries, _, err := d.store.Client().Catalog().Service(state.HostService, "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	var nodes []string
	for _, e := range entries {
		if e.ServiceID == serviceID {
			nodes = append(nodes, e.Node)
		}
	}
	if len(nodes) != 1 {
		return "", fmt.Errorf("registration %s is on %d nodes of the catalog (%v)", serviceID, len(nodes), nodes)
	}
	return nodes[0], nil
}
