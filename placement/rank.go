package placement

import "math"

// ranking keeps the healthy hosts in a tournament tree ordered by rank, the part of
// better that does not depend on the group (usage, count, tie-break), so that a small group
// finds its best hosts by looking at a few of them instead of scanning thousands. Each node
// holds the best host below it, and the most free cpu and memory of any host below it, so
// that walks skip whole subtrees with no room. Placing an instance re-ranks one host: one
// path to the root.
type ranking struct {
	p       *planner
	leaves  int       // a power of two; host h is node leaves+h
	best    []int32   // per node, -1 for none
	freeCPU []int64   // per node
	freeMem []int64   // per node
	heap    []int32   // nodes to visit, scratch for walk
	better  rankOrder // rank order of hosts
}

type rankOrder func(a, b int32) bool

func newRanking(p *planner) *ranking {
	n := 1
	for n < len(p.hosts) {
		n *= 2
	}
	r := &ranking{
		p:       p,
		leaves:  n,
		best:    make([]int32, 2*n),
		freeCPU: make([]int64, 2*n),
		freeMem: make([]int64, 2*n),
		better:  p.rankBetter,
	}
	for i := n; i < 2*n; i++ {
		r.setLeaf(i)
	}
	for i := n - 1; i >= 1; i-- {
		r.pull(i)
	}
	return r
}

func (r *ranking) setLeaf(node int) {
	h := int32(node - r.leaves)
	if int(h) >= len(r.p.hosts) || r.p.health[h] != healthy {
		r.best[node], r.freeCPU[node], r.freeMem[node] = -1, -1, -1
		return
	}
	r.best[node] = h
	r.freeCPU[node] = free(r.p.used[h].CPU, r.p.capacity[h].CPU)
	r.freeMem[node] = free(r.p.used[h].Memory, r.p.capacity[h].Memory)
}

func free(used, capacity int64) int64 {
	if capacity == 0 {
		return math.MaxInt64
	}
	return capacity - used
}

// pull recomputes node i from its children.
func (r *ranking) pull(i int) {
	a, b := r.best[2*i], r.best[2*i+1]
	switch {
	case a < 0:
		r.best[i] = b
	case b < 0 || r.better(a, b):
		r.best[i] = a
	default:
		r.best[i] = b
	}
	r.freeCPU[i] = max(r.freeCPU[2*i], r.freeCPU[2*i+1])
	r.freeMem[i] = max(r.freeMem[2*i], r.freeMem[2*i+1])
}

// update re-ranks host h after its usage changed.
func (r *ranking) update(h int32) {
	i := r.leaves + int(h)
	r.setLeaf(i)
	for i /= 2; i >= 1; i /= 2 {
		r.pull(i)
	}
}

type walkEnd uint8

const (
	walkDone      walkEnd = iota // visit had enough
	walkExhausted                // every host with room was visited
	walkGaveUp                   // maxVisits hosts visited, visit still wants more
)

// walk visits healthy hosts that may have room for req, best rank first, until visit says
// it has enough, or maxVisits hosts were visited. It expands the tree lazily: visiting the
// best host of a subtree pushes the subtrees beside its path, whose best hosts come next.
func (r *ranking) walk(req Resources, maxVisits int, visit func(h int32) (enough bool)) walkEnd {
	roomy := func(n int) bool {
		return r.best[n] >= 0 && r.freeCPU[n] >= req.CPU && r.freeMem[n] >= req.Memory
	}
	nodeBetter := func(a, b int32) bool { return r.better(r.best[a], r.best[b]) }
	heap := r.heap[:0]
	defer func() { r.heap = heap[:0] }()
	if roomy(1) {
		heap = append(heap, 1)
	}
	for visits := 0; len(heap) > 0; visits++ {
		if visits == maxVisits {
			return walkGaveUp
		}
		n := int(heap[0])
		heap[0] = heap[len(heap)-1]
		heap = heap[:len(heap)-1]
		heapDown(heap, 0, nodeBetter)

		h := r.best[n]
		if visit(h) {
			return walkDone
		}
		leaf := r.leaves + int(h)
		for depth := depthOf(leaf) - depthOf(n); depth > 0; depth-- {
			child := leaf >> (depth - 1) // on the path to h
			if sibling := child ^ 1; roomy(sibling) {
				heap = heapPush(heap, int32(sibling), nodeBetter)
			}
		}
	}
	return walkExhausted
}

func depthOf(node int) int {
	d := 0
	for node > 1 {
		node /= 2
		d++
	}
	return d
}

func heapPush(a []int32, x int32, less func(x, y int32) bool) []int32 {
	a = append(a, x)
	for i := len(a) - 1; i > 0; {
		parent := (i - 1) / 2
		if !less(a[i], a[parent]) {
			break
		}
		a[i], a[parent] = a[parent], a[i]
		i = parent
	}
	return a
}
