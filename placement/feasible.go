package placement

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file says which hosts can take an instance: constraints on labels, room, distinct
// hosts; and, when none can, why.

// feasibility is what a set of constraints allows, computed once per distinct set: many
// services share a handful of constraint sets (often none), and a regexp is costly enough
// not to run once per instance and host.
type feasibility struct {
	constraints []Constraint
	re          []*regexp.Regexp // per constraint, for OpRegexp
	err         string           // an invalid constraint: nothing with it can be placed
	pin         string           // the one host allowed, "" for any
	ok          []bool           // per host: the labels satisfy every constraint
	healthy     []int32          // hosts that are ok and healthy: where new instances may go
	perValue    map[*labelIndex][]int32
}

// healthyPerValue counts the healthy hosts f allows per value of a label (one count for
// all when li is nil).
func (f *feasibility) healthyPerValue(li *labelIndex) []int32 {
	if li == nil {
		return []int32{int32(len(f.healthy))}
	}
	if n, ok := f.perValue[li]; ok {
		return n
	}
	n := make([]int32, len(li.values)+1)
	for _, h := range f.healthy {
		n[li.valueOf[h]]++
	}
	if f.perValue == nil {
		f.perValue = make(map[*labelIndex][]int32)
	}
	f.perValue[li] = n
	return n
}

type regexpOrError struct {
	re  *regexp.Regexp
	err error
}

func (p *planner) feasibility(cs []Constraint, pin string) *feasibility {
	k := constraintKey(cs)
	if pin != "" {
		k += "\x00" + pin // no constraint key holds a NUL outside a length-prefixed value
	}
	if f := p.feas[k]; f != nil {
		return f
	}
	f := &feasibility{constraints: cs, re: make([]*regexp.Regexp, len(cs)), pin: pin}
	p.feas[k] = f
	for j, c := range cs {
		switch c.Op {
		case OpEqual, OpNotEqual:
		case OpRegexp:
			r, seen := p.regexps[c.Value]
			if !seen {
				r.re, r.err = regexp.Compile(c.Value)
				p.regexps[c.Value] = r
			}
			if r.err != nil {
				f.err = fmt.Sprintf("invalid constraint %s: %v", c, r.err)
				return f
			}
			f.re[j] = r.re
		default:
			f.err = fmt.Sprintf("invalid constraint %s: unknown operator %q", c, c.Op)
			return f
		}
	}
	f.ok = make([]bool, len(p.hosts))
	for h, host := range p.hosts {
		f.ok[h] = (pin == "" || host.ID == pin) && f.firstFailing(host.Labels) < 0
		if f.ok[h] && p.health[h] == healthy {
			f.healthy = append(f.healthy, int32(h))
		}
	}
	return f
}

// firstFailing returns the index of the first constraint the labels fail, or -1.
func (f *feasibility) firstFailing(labels map[string]string) int {
	for j, c := range f.constraints {
		v, present := labels[c.Key]
		var holds bool
		switch c.Op {
		case OpEqual:
			holds = present && v == c.Value
		case OpNotEqual:
			holds = !present || v != c.Value
		default:
			holds = present && f.re[j].MatchString(v)
		}
		if !holds {
			return j
		}
	}
	return -1
}

// constraintKey encodes a constraint list as a map key, lengths first so that no label
// content can make two lists collide. Order is kept: it decides which constraint a reason
// blames.
func constraintKey(cs []Constraint) string {
	if len(cs) == 0 {
		return ""
	}
	var b []byte
	for _, c := range cs {
		for _, s := range [...]string{c.Key, string(c.Op), c.Value} {
			b = strconv.AppendInt(b, int64(len(s)), 10)
			b = append(b, ':')
			b = append(b, s...)
		}
	}
	return string(b)
}

// fits says whether host h has room for r; a dimension of unknown capacity always has room.
func (p *planner) fits(h int32, r Resources) bool {
	c, u := p.capacity[h], p.used[h]
	return (c.CPU == 0 || r.CPU <= c.CPU-u.CPU) && (c.Memory == 0 || r.Memory <= c.Memory-u.Memory)
}

// allowed applies distinct hosts to host h for group g. It reads the dense view of g's
// service that loadService set up.
func (p *planner) allowed(g *group, h int32) bool {
	if g.key.distinct {
		return p.svcOn[h] == 0
	}
	return p.svcDistinct[h] == 0
}

// loadService copies where s runs into dense per-host arrays, so that scanning thousands of
// hosts for a group reads an array instead of a map; unloadService clears them.
func (p *planner) loadService(s *service) {
	for h, on := range s.on {
		p.svcOn[h], p.svcDistinct[h] = on.count, on.distinct
	}
}

func (p *planner) unloadService(s *service) {
	for h := range s.on {
		p.svcOn[h], p.svcDistinct[h] = 0, 0
	}
}

// labelIndex maps each host to the index of its value for one label, for spreading.
type labelIndex struct {
	values  []string // distinct values, sorted; index len(values) stands for "no such label"
	valueOf []int32  // per host
}

func (p *planner) labelIndex(key string) *labelIndex {
	if li := p.labels[key]; li != nil {
		return li
	}
	idx := make(map[string]int32)
	for _, h := range p.hosts {
		if v, ok := h.Labels[key]; ok {
			idx[v] = 0
		}
	}
	li := &labelIndex{valueOf: make([]int32, len(p.hosts))}
	for v := range idx {
		li.values = append(li.values, v)
	}
	slices.Sort(li.values)
	for j, v := range li.values {
		idx[v] = int32(j)
	}
	for h, host := range p.hosts {
		if v, ok := host.Labels[key]; ok {
			li.valueOf[h] = idx[v]
		} else {
			li.valueOf[h] = int32(len(li.values))
		}
	}
	p.labels[key] = li
	return li
}

// explain says why no host can take one more instance of g, counting each host once under
// the first reason that rules it out, in the order checked here: liveness, constraints,
// distinct hosts, cpu, memory. The service of g must be loaded.
func (p *planner) explain(g *group) string {
	if g.feas.pin != "" {
		return p.explainPinned(g)
	}
	if len(p.hosts) == 0 {
		return "no hosts"
	}
	var nCritical, nDead, nDistinct, nCPU, nMem int
	byConstraint := make([]int, len(g.feas.constraints))
	for i, host := range p.hosts {
		h := int32(i)
		c, u := p.capacity[h], p.used[h]
		switch {
		case p.health[h] == dead:
			nDead++
		case p.health[h] == critical:
			nCritical++
		case !g.feas.ok[h]:
			byConstraint[g.feas.firstFailing(host.Labels)]++
		case !p.allowed(g, h):
			nDistinct++
		case c.CPU != 0 && g.req.CPU > c.CPU-u.CPU:
			nCPU++
		case c.Memory != 0 && g.req.Memory > c.Memory-u.Memory:
			nMem++
		}
	}
	var parts []string
	if nCPU > 0 {
		parts = append(parts, "cpu exhausted on "+hosts(nCPU))
	}
	if nMem > 0 {
		parts = append(parts, "memory exhausted on "+hosts(nMem))
	}
	if nDistinct > 0 {
		parts = append(parts, fmt.Sprintf("distinct hosts filtered %d", nDistinct))
	}
	for j, n := range byConstraint {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("constraint %s filtered %d", g.feas.constraints[j], n))
		}
	}
	if nCritical > 0 {
		parts = append(parts, hosts(nCritical)+" critical")
	}
	if nDead > 0 {
		parts = append(parts, hosts(nDead)+" dead")
	}
	return strings.Join(parts, ", ")
}

func hosts(n int) string {
	if n == 1 {
		return "1 host"
	}
	return strconv.Itoa(n) + " hosts"
}
