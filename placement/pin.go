package placement

import "fmt"

// An instance pinned to a host (Instance.Host: its volumes are there) runs on that host
// or nowhere. Its feasibility allows that one host (feasible.go), so it is kept there,
// placed there, or left unplaced; this file says why it is left unplaced, naming the host
// and what is wrong with it.

// explainPinned is explain for a group pinned to one host. The service of g must be
// loaded.
func (p *planner) explainPinned(g *group) string {
	pin := g.feas.pin
	h, known := p.hostIdx[pin]
	why := ""
	switch {
	case !known:
		why = "is gone (dead, or not among the hosts any more)"
	case p.health[h] == dead:
		why = "is dead"
	case p.health[h] == critical:
		why = "is critical"
	case g.feas.firstFailing(p.hosts[h].Labels) >= 0:
		why = fmt.Sprintf("is filtered by constraint %s", g.feas.constraints[g.feas.firstFailing(p.hosts[h].Labels)])
	case !p.allowed(g, h):
		why = "is filtered by distinct hosts"
	default:
		c, u := p.capacity[h], p.used[h]
		switch {
		case c.CPU != 0 && g.req.CPU > c.CPU-u.CPU:
			why = "has its cpu exhausted"
		case c.Memory != 0 && g.req.Memory > c.Memory-u.Memory:
			why = "has its memory exhausted"
		default:
			why = "cannot take it"
		}
	}
	return fmt.Sprintf("its volumes are on host %s, which %s", pin, why)
}
