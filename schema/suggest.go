package schema

import "strings"

// closest returns the candidate nearest to s, for "did you mean" hints: a case-insensitive
// edit distance (letters swapped count as one edit) of at most a third of the word's
// length. It returns "" when nothing is that close, or when there are too many candidates
// for the search to stay cheap on hostile input.
func closest(s string, candidates []string) string {
	if len(candidates) > 200 {
		return ""
	}
	best, bestDist := "", -1
	s = strings.ToLower(s)
	for _, c := range candidates {
		limit := max(1, (len(c)+1)/3)
		if abs(len(c)-len(s)) > limit {
			continue
		}
		if d := editDistance(s, strings.ToLower(c)); d <= limit && (bestDist < 0 || d < bestDist) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b, by bytes:
// insertions, deletions, substitutions and swaps of neighbours each cost one.
func editDistance(a, b string) int {
	// Three rows of the dynamic programming table: two back, one back, current.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
