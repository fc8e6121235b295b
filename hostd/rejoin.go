package hostd

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/hashicorp/consul/api"
)

// serfAlive is a Consul member's status when its gossip is alive.
const serfAlive = 1

// probeConsul reports whether Consul answers through the local agent (it knows a leader).
// When it does not because the agent lost its servers, it asks the agent to join them
// again: a host whose network comes back after a partition would otherwise wait for
// Consul's gossip to retry a failed member, which it does every 30 seconds, while the
// instances it should have stopped stay registered. The assignment watch calls it while
// failing, every ConsulProbe.
func (d *Daemon) probeConsul(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ConsulTimeout)
	defer cancel()
	leader, err := d.store.Client().Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err == nil && leader != "" {
		return nil
	}
	d.rejoin()
	if err == nil {
		err = errors.New("consul knows no leader")
	}
	return err
}

// rejoin asks the local agent, in the background and one request at a time, to join a
// Consul server it knows but sees failed. A join through a link still down takes the
// agent's dial timeout to fail; through one that is back, it succeeds at once and the agent
// learns the servers' state.
func (d *Daemon) rejoin() {
	if !d.joining.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.joining.Store(false)
		agent := d.store.Client().Agent()
		members, err := agent.Members(false)
		if err != nil {
			return
		}
		for _, m := range members {
			if m.Tags["role"] != "consul" || m.Status == serfAlive {
				continue
			}
			addr := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
			if err := agent.Join(addr, false); err == nil {
				d.log.Info("local Consul agent rejoined a server it had lost", "server", addr)
				return
			}
		}
	}()
}
