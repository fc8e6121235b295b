package placement

import "math/bits"

// This file chooses among the hosts that can take an instance.
//
// Hosts are ranked by a key compared field by field, so a choice can be explained in one
// sentence:
//
//	spread:  fewest instances of the service, least used (cpu share + memory share),
//	         fewest instances, tie-break
//	binpack: most used, most instances, tie-break
//
// and, when the instance has a SpreadLabel, the label value with the fewest instances of
// the service comes before all of these. Usage is measured before placing, so the ranking of
// the hosts a group has not used yet does not depend on the group: that is what lets a group
// keep only its k best candidates (see placeGroup).

// better reports whether host a ranks before host b for the group whose service is loaded.
func (p *planner) better(a, b int32) bool {
	if !p.opts.Binpack && p.svcOn[a] != p.svcOn[b] {
		return p.svcOn[a] < p.svcOn[b]
	}
	return p.rankBetter(a, b)
}

// rankBetter is better without the service: the same for every group, so the ranking can
// keep hosts in this order once for all groups.
func (p *planner) rankBetter(a, b int32) bool {
	if p.opts.Binpack {
		if p.load[a] != p.load[b] {
			return p.load[a] > p.load[b]
		}
		if p.count[a] != p.count[b] {
			return p.count[a] > p.count[b]
		}
	} else {
		if p.load[a] != p.load[b] {
			return p.load[a] < p.load[b]
		}
		if p.count[a] != p.count[b] {
			return p.count[a] < p.count[b]
		}
	}
	if p.tie[a] != p.tie[b] {
		return p.tie[a] < p.tie[b]
	}
	return a < b
}

// placeGroup places as many members of g as it can, each on the best host that can take it,
// and returns those left over. The service of g must be loaded.
//
// A naive placer scans every host for every instance. This one looks at the hosts once per
// group, and then only at what can matter: placing an instance changes the rank of the host
// it went to and nothing else (the spread label's count changes for a whole value at once,
// which keeps the order within the value). So the k members of a group can only ever use,
// within each label value, one of the k hosts that ranked best at the start. placeGroup
// finds those (candidatesByRank walks the ranking for a small group, candidatesByScan scans
// for a large one), keeps them in a heap per value, and the values in a heap by their count
// and best host.
func (p *planner) placeGroup(g *group) (left []int32) {
	var li *labelIndex
	if g.key.spread != "" {
		li = p.labelIndex(g.key.spread)
	}
	cands, ok := p.candidatesByRank(g, li)
	if !ok {
		cands = p.candidatesByScan(g)
	}
	if len(cands) == 0 {
		return g.members
	}

	// Bucket the candidates by spread label value (one bucket without a label), keep the k
	// best of each, and count the service's instances per value.
	k := len(g.members)
	var buckets [][]int32
	var perValue []int32
	if li == nil {
		buckets = [][]int32{shortlist(cands, k, p.better)}
		perValue = []int32{0}
	} else {
		nv := len(li.values) + 1
		start := resize(p.valueStart, nv+1)
		for _, h := range cands {
			start[li.valueOf[h]+1]++
		}
		for v := 1; v <= nv; v++ {
			start[v] += start[v-1]
		}
		sorted := resize(p.buf, len(cands))
		next := resize(p.valueCount, nv)
		copy(next, start[:nv])
		for _, h := range cands {
			v := li.valueOf[h]
			sorted[next[v]] = h
			next[v]++
		}
		buckets = make([][]int32, nv)
		for v := range nv {
			buckets[v] = shortlist(sorted[start[v]:start[v+1]], k, p.better)
		}
		perValue = resize(next, nv)
		for h, on := range g.svc.on {
			perValue[li.valueOf[h]] += on.count
		}
		p.valueStart, p.buf, p.valueCount = start, sorted, perValue
	}

	values := make([]int32, 0, len(buckets))
	for v, b := range buckets {
		if len(b) > 0 {
			values = append(values, int32(v))
		}
	}
	valueBetter := func(v, w int32) bool {
		if perValue[v] != perValue[w] {
			return perValue[v] < perValue[w]
		}
		return p.better(buckets[v][0], buckets[w][0])
	}
	heapInit(values, valueBetter)

	for n, i := range g.members {
		if len(values) == 0 {
			return g.members[n:]
		}
		v := values[0]
		b := buckets[v]
		h := b[0]
		p.place(i, h)
		p.svcOn[h]++
		if g.key.distinct {
			p.svcDistinct[h]++
		}
		// The chosen host only got fuller: in spread it ranks lower, in binpack higher, and
		// it leaves the heap once it cannot take another member.
		if g.key.distinct || !p.fits(h, g.req) {
			b[0] = b[len(b)-1]
			b = b[:len(b)-1]
		}
		heapDown(b, 0, p.better)
		buckets[v] = b
		perValue[v]++
		if len(b) == 0 {
			values[0] = values[len(values)-1]
			values = values[:len(values)-1]
		}
		heapDown(values, 0, valueBetter)
	}
	return nil
}

// candidatesByScan returns every host that can take a member of g.
func (p *planner) candidatesByScan(g *group) []int32 {
	cands := p.cands[:0]
	for _, h := range g.feas.healthy {
		if p.canTake(g, h) {
			cands = append(cands, h)
		}
	}
	p.cands = cands
	return cands
}

// canTake says whether healthy host h, which satisfies g's constraints, can take a member of g.
func (p *planner) canTake(g *group, h int32) bool { return p.allowed(g, h) && p.fits(h, g.req) }

// candidatesByRank returns, per label value, the k best hosts that can take a member of g
// (k = len(g.members)): all placeGroup can use. It walks the ranking and stops as soon as
// every value has its k, which for a small group in a large cluster means looking at a few
// hosts instead of all. In spread mode it passes over hosts already running the service:
// they rank after all others, so they matter only when the walk runs out of hosts.
// It returns false when the walk would cost about as much as a scan.
func (p *planner) candidatesByRank(g *group, li *labelIndex) ([]int32, bool) {
	k := int32(len(g.members))
	maxVisits := len(g.feas.healthy) / p.scanRatio
	hostsPerValue := g.feas.healthyPerValue(li)
	need := resize(p.need, len(hostsPerValue))
	p.need = need
	total := 0
	for v, n := range hostsPerValue {
		need[v] = min(k, n)
		total += int(need[v])
	}
	cands := p.cands[:0]
	if total == 0 {
		return cands, true
	}
	if total > maxVisits {
		return nil, false
	}
	end := p.rank.walk(g.req, maxVisits, func(h int32) bool {
		if !g.feas.ok[h] || !p.canTake(g, h) || !p.opts.Binpack && p.svcOn[h] > 0 {
			return false
		}
		v := int32(0)
		if li != nil {
			v = li.valueOf[h]
		}
		if need[v] == 0 {
			return false
		}
		need[v]--
		total--
		cands = append(cands, h)
		return total == 0
	})
	switch end {
	case walkGaveUp:
		return nil, false
	case walkExhausted:
		if !p.opts.Binpack {
			for h := range g.svc.on {
				if p.svcOn[h] > 0 && p.health[h] == healthy && g.feas.ok[h] && p.canTake(g, h) {
					cands = append(cands, h)
				}
			}
		}
	}
	p.cands = cands
	return cands, true
}

// shortlist reorders a so that its k best hosts come first, as a heap ordered by better, and
// returns them: a bounded heap of the worst of the best keeps this near one comparison per
// host when k is small.
func shortlist(a []int32, k int, better func(x, y int32) bool) []int32 {
	if len(a) > k {
		worse := func(x, y int32) bool { return better(y, x) }
		heapInit(a[:k], worse)
		for j := k; j < len(a); j++ {
			if better(a[j], a[0]) {
				a[0] = a[j]
				heapDown(a[:k], 0, worse)
			}
		}
		a = a[:k]
	}
	heapInit(a, better)
	return a
}

func heapInit(a []int32, less func(x, y int32) bool) {
	for i := len(a)/2 - 1; i >= 0; i-- {
		heapDown(a, i, less)
	}
}

// heapDown moves a[i] down until neither child ranks before it.
func heapDown(a []int32, i int, less func(x, y int32) bool) {
	for {
		l := 2*i + 1
		if l >= len(a) {
			return
		}
		j := l
		if r := l + 1; r < len(a) && less(a[r], a[l]) {
			j = r
		}
		if !less(a[j], a[i]) {
			return
		}
		a[i], a[j] = a[j], a[i]
		i = j
	}
}

// resize returns a zeroed slice of length n, reusing s's memory when it can.
func resize(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// share is the part of capacity used, in millionths. A dimension of unknown capacity counts
// as empty. Integer arithmetic keeps rankings identical on every platform; the 128-bit
// product cannot overflow, and used never exceeds capacity.
func share(used, capacity int64) int64 {
	if capacity <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(used), 1_000_000)
	q, _ := bits.Div64(hi, lo, uint64(capacity))
	return int64(q)
}

// tieBreak ranks hosts that are equal in every other way: a hash of the seed and the host
// ID, so that hosts with small IDs do not take every tie, and the same seed always makes the
// same choice. FNV-1a, then the SplitMix64 finaliser to mix its weak low bits.
func tieBreak(seed int64, id string) uint64 {
	x := uint64(14695981039346656037)
	for i := range 8 {
		x ^= uint64(byte(seed >> (8 * i)))
		x *= 1099511628211
	}
	for i := 0; i < len(id); i++ {
		x ^= uint64(id[i])
		x *= 1099511628211
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
