package placement

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Plan decides the new assignment of every host. It is pure: the same input gives the same
// Result, whatever the order of desired, hosts and the lists in current. current maps a host
// ID to the instance IDs assigned to it now; hosts absent from hosts are gone, and their
// instances are re-placed.
//
// It works in two passes, like Nomad's reconciler then its placer:
//
//  1. Keep. Every instance in current that is still desired stays where it is if its host is
//     not dead, satisfies its constraints and still has room for it (a host that shrank sheds
//     instances in ID order). Nothing else moves it: not a new host, not a better balance.
//     Instances no longer desired, or that cannot stay, are stopped.
//  2. Place. The desired instances left are grouped by what they require (same formation,
//     service, release, resources, constraints, distinct hosts, spread label); groups go
//     largest first (memory, then cpu) so that small instances fill the gaps, and each
//     group's instances go one by one to the best host that can take them (see score.go),
//     or stay unplaced with a reason that counts why each host refused.
//
// Desired instance IDs and host IDs must be unique; a repeated instance ID is reported
// unplaced, a repeated host is ignored. Result shares the Constraints slices of desired.
func Plan(desired []Instance, hosts []Host, current map[string][]string, now time.Time, opts Options) Result {
	p := newPlanner(desired, hosts, now, opts)
	p.keep(current)
	p.placeAll(p.placeGroup)
	return p.result()
}

// health is a host's liveness as of now.
type health uint8

const (
	healthy  health = iota
	critical        // keeps its instances, gets no new one
	dead            // loses its instances
)

type svcKey struct{ formation, service string }

// service tracks where a (formation, service) runs, across its releases, for spreading and
// distinct hosts. Sparse: a service runs on few of many hosts.
type service struct {
	on map[int32]svcOnHost
}

type svcOnHost struct {
	count    int32 // instances of the service on the host
	distinct int32 // of which ask for distinct hosts
}

// group is desired instances with identical requirements, placed together so that the
// hosts are looked at once per group rather than once per instance.
type group struct {
	key     groupKey
	svc     *service
	req     Resources
	feas    *feasibility
	members []int32 // instance indices, in ID order
	left    []int32 // members no host could take
}

type groupKey struct {
	formation, service, release string
	req                         Resources
	constraints                 string // constraintKey
	pin                         string // Instance.Host
	distinct                    bool
	spread                      string
}

type planner struct {
	opts Options

	// Hosts, sorted by ID; a host is known by its index.
	hosts    []*Host
	hostIdx  map[string]int32
	health   []health
	capacity []Resources // 0: unlimited
	used     []Resources
	load     []int64  // share of capacity used (see share), cpu plus memory
	count    []int32  // instances assigned
	tie      []uint64 // seeded hash of the ID, the last tie-break
	assigned [][]int32
	changed  []bool

	// Desired instances, sorted by ID; an instance is known by its index.
	inst    []*Instance
	instIdx map[string]int32
	hostOf  []int32 // -1 while unplaced
	svcOf   []*service
	started []int32

	services map[svcKey]*service
	feas     map[string]*feasibility
	regexps  map[string]regexpOrError
	labels   map[string]*labelIndex

	stops          []Move
	unplaced       []Unplaced
	changedUnknown []string

	// Scratch reused by every group: dense per-host views of the group's service, and
	// candidate lists.
	svcOn, svcDistinct []int32
	cands, buf         []int32
	valueCount         []int32
	valueStart         []int32
	need               []int32

	// rank orders the healthy hosts during pass 2; scanRatio says when a walk of it costs
	// more than a scan: beyond one host in scanRatio (tests lower it to walk more).
	rank      *ranking
	scanRatio int
}

func newPlanner(desired []Instance, hosts []Host, now time.Time, opts Options) *planner {
	p := &planner{
		opts:     opts,
		services: make(map[svcKey]*service),
		feas:     make(map[string]*feasibility),
		regexps:  make(map[string]regexpOrError),
		labels:   make(map[string]*labelIndex),
		// A walk pays a heap push per tree level for each host it visits, a scan a few
		// comparisons: a walk that gives up after one host in 16 costs about the scan
		// it falls back to. The benchmarks run the same from 4 to 64.
		scanRatio: 16,
	}

	hs := make([]*Host, len(hosts))
	for i := range hosts {
		hs[i] = &hosts[i]
	}
	slices.SortStableFunc(hs, func(a, b *Host) int { return strings.Compare(a.ID, b.ID) })
	p.hostIdx = make(map[string]int32, len(hs))
	for _, h := range hs {
		if _, dup := p.hostIdx[h.ID]; dup {
			continue
		}
		p.hostIdx[h.ID] = int32(len(p.hosts))
		p.hosts = append(p.hosts, h)
	}
	n := len(p.hosts)
	p.health = make([]health, n)
	p.capacity = make([]Resources, n)
	p.used = make([]Resources, n)
	p.load = make([]int64, n)
	p.count = make([]int32, n)
	p.tie = make([]uint64, n)
	p.assigned = make([][]int32, n)
	p.changed = make([]bool, n)
	p.svcOn = make([]int32, n)
	p.svcDistinct = make([]int32, n)
	for i, h := range p.hosts {
		p.health[i] = hostHealth(h, now, opts.DeadAfter)
		p.capacity[i] = nonNegative(h.Capacity)
		p.tie[i] = tieBreak(opts.Seed, h.ID)
	}

	is := make([]*Instance, len(desired))
	for i := range desired {
		is[i] = &desired[i]
	}
	slices.SortStableFunc(is, func(a, b *Instance) int { return strings.Compare(a.ID, b.ID) })
	p.instIdx = make(map[string]int32, len(is))
	for _, in := range is {
		if _, dup := p.instIdx[in.ID]; dup {
			p.unplaced = append(p.unplaced, Unplaced{Instance: *in, Reason: "duplicate instance id"})
			continue
		}
		p.instIdx[in.ID] = int32(len(p.inst))
		p.inst = append(p.inst, in)
	}
	p.hostOf = make([]int32, len(p.inst))
	p.svcOf = make([]*service, len(p.inst))
	for i, in := range p.inst {
		p.hostOf[i] = -1
		k := svcKey{in.Formation, in.Service}
		s := p.services[k]
		if s == nil {
			s = &service{on: make(map[int32]svcOnHost)}
			p.services[k] = s
		}
		p.svcOf[i] = s
	}
	return p
}

func hostHealth(h *Host, now time.Time, deadAfter time.Duration) health {
	switch {
	case h.CriticalSince.IsZero():
		return healthy
	case now.Sub(h.CriticalSince) > deadAfter:
		return dead
	default:
		return critical
	}
}

func nonNegative(r Resources) Resources {
	return Resources{CPU: max(r.CPU, 0), Memory: max(r.Memory, 0)}
}

// keep is pass 1: it decides, host by host in ID order and instance by instance in ID
// order, what stays where it runs.
func (p *planner) keep(current map[string][]string) {
	hostIDs := make([]string, 0, len(current))
	for id := range current {
		hostIDs = append(hostIDs, id)
	}
	slices.Sort(hostIDs)
	var ids []string
	for _, hid := range hostIDs {
		ids = append(ids[:0], current[hid]...)
		slices.Sort(ids)
		ids = slices.Compact(ids)
		h, known := p.hostIdx[hid]
		for _, id := range ids {
			i, desired := p.instIdx[id]
			switch {
			case !desired:
				p.stop(Instance{ID: id}, h, known, hid)
			case !known || p.health[h] == dead:
				p.stop(*p.inst[i], h, known, hid)
			case p.hostOf[i] >= 0: // also listed on an earlier host, where it stays
				p.stop(*p.inst[i], h, known, hid)
			case !p.canStay(i, h):
				p.stop(*p.inst[i], h, known, hid)
			default:
				p.assign(i, h)
			}
		}
	}
}

func (p *planner) stop(in Instance, h int32, known bool, hostID string) {
	p.stops = append(p.stops, Move{Instance: in, Host: hostID})
	if known {
		p.changed[h] = true
	} else if len(p.changedUnknown) == 0 || p.changedUnknown[len(p.changedUnknown)-1] != hostID {
		p.changedUnknown = append(p.changedUnknown, hostID) // keep visits hosts in order
	}
}

// canStay says whether instance i may go on running on host h, given what was kept there
// before it.
func (p *planner) canStay(i, h int32) bool {
	in := p.inst[i]
	f := p.feasibility(in.Constraints, in.Host)
	if f.err != "" || !f.ok[h] {
		return false
	}
	on := p.svcOf[i].on[h]
	if in.DistinctHosts && on.count > 0 || !in.DistinctHosts && on.distinct > 0 {
		return false
	}
	return p.fits(h, nonNegative(in.Resources))
}

// assign puts instance i on host h and updates every count that later choices read.
func (p *planner) assign(i, h int32) {
	in := p.inst[i]
	p.hostOf[i] = h
	p.assigned[h] = append(p.assigned[h], i)
	r := nonNegative(in.Resources)
	p.used[h].CPU += r.CPU
	p.used[h].Memory += r.Memory
	p.load[h] = share(p.used[h].CPU, p.capacity[h].CPU) + share(p.used[h].Memory, p.capacity[h].Memory)
	p.count[h]++
	if p.rank != nil {
		p.rank.update(h)
	}
	s := p.svcOf[i]
	on := s.on[h]
	on.count++
	if in.DistinctHosts {
		on.distinct++
	}
	s.on[h] = on
}

// placeAll is pass 2: it groups what is left and places the groups, largest first, with
// place (placeGroup; tests pass a naive one to compare).
func (p *planner) placeAll(place func(*group) []int32) {
	p.rank = newRanking(p)

	// Group what is left. A group's members are a run of one shared slice, in ID order.
	index := make(map[groupKey]int32)
	var groups []group
	var sizes []int
	groupOf := make([]int32, len(p.inst))
	pending := 0
	for i, in := range p.inst {
		if p.hostOf[i] >= 0 {
			continue
		}
		k := groupKey{
			formation:   in.Formation,
			service:     in.Service,
			release:     in.Release,
			req:         nonNegative(in.Resources),
			constraints: constraintKey(in.Constraints),
			pin:         in.Host,
			distinct:    in.DistinctHosts,
			spread:      in.SpreadLabel,
		}
		g, seen := index[k]
		if !seen {
			g = int32(len(groups))
			index[k] = g
			groups = append(groups, group{key: k, svc: p.svcOf[i], req: k.req, feas: p.feasibility(in.Constraints, in.Host)})
			sizes = append(sizes, 0)
		}
		groupOf[i] = g
		sizes[g]++
		pending++
	}
	shared := make([]int32, 0, pending)
	for g, n := range sizes {
		groups[g].members = shared[len(shared) : len(shared) : len(shared)+n]
		shared = shared[:len(shared)+n]
	}
	for i := range p.inst {
		if p.hostOf[i] < 0 {
			g := &groups[groupOf[i]]
			g.members = append(g.members, int32(i))
		}
	}

	// Largest first; ties by the ID of the first member, so the order is total.
	order := make([]int32, len(groups))
	for g := range order {
		order[g] = int32(g)
	}
	slices.SortFunc(order, func(a, b int32) int {
		ga, gb := &groups[a], &groups[b]
		return cmp.Or(
			cmp.Compare(gb.req.Memory, ga.req.Memory),
			cmp.Compare(gb.req.CPU, ga.req.CPU),
			cmp.Compare(ga.members[0], gb.members[0]),
		)
	})

	var short []*group
	for _, gi := range order {
		g := &groups[gi]
		if g.feas.err != "" {
			p.leaveUnplaced(g.members, g.feas.err)
			continue
		}
		p.loadService(g.svc)
		if g.left = place(g); len(g.left) > 0 {
			short = append(short, g)
		}
		p.unloadService(g.svc)
	}
	// Explain against the final assignment, not the one at the group's turn: that is what
	// the next plan will see, so the reason does not change from one plan to the next.
	for _, g := range short {
		p.loadService(g.svc)
		p.leaveUnplaced(g.left, p.explain(g))
		p.unloadService(g.svc)
	}
}

func (p *planner) leaveUnplaced(members []int32, reason string) {
	for _, i := range members {
		p.unplaced = append(p.unplaced, Unplaced{Instance: *p.inst[i], Reason: reason})
	}
}

// place puts instance i on host h as a new start.
func (p *planner) place(i, h int32) {
	p.assign(i, h)
	p.started = append(p.started, i)
	p.changed[h] = true
}

func (p *planner) result() Result {
	r := Result{Assignments: make(map[string][]Instance)}
	for h, list := range p.assigned {
		if len(list) == 0 {
			continue
		}
		slices.Sort(list) // instance indices follow ID order
		a := make([]Instance, len(list))
		for j, i := range list {
			a[j] = *p.inst[i]
		}
		r.Assignments[p.hosts[h].ID] = a
	}

	slices.Sort(p.started)
	if len(p.started) > 0 {
		r.Start = make([]Move, 0, len(p.started))
	}
	for _, i := range p.started {
		r.Start = append(r.Start, Move{Instance: *p.inst[i], Host: p.hosts[p.hostOf[i]].ID})
	}

	slices.SortFunc(p.stops, func(a, b Move) int {
		return cmp.Or(strings.Compare(a.Instance.ID, b.Instance.ID), strings.Compare(a.Host, b.Host))
	})
	r.Stop = p.stops

	slices.SortStableFunc(p.unplaced, func(a, b Unplaced) int { return strings.Compare(a.Instance.ID, b.Instance.ID) })
	r.Unplaced = p.unplaced

	changed := p.changedUnknown
	for h, c := range p.changed {
		if c {
			changed = append(changed, p.hosts[h].ID)
		}
	}
	slices.Sort(changed)
	r.Changed = changed
	return r
}
