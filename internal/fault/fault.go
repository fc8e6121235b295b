package fault

import (
	"errors"
	"hash/fnv"
	"time"
)

// Kind is what a caller does with an error.
type Kind int

const (
	// Retryable: nothing is wrong with the input; try again later.
	Retryable Kind = iota
	// Stalled: retrying the same input fails the same way; a person must change it.
	Stalled
	// Superseded: newer work replaced this one; drop it.
	Superseded
)

func (k Kind) String() string {
	switch k {
	case Stalled:
		return "stalled"
	case Superseded:
		return "superseded"
	}
	return "retryable"
}

// A Kinded error says its kind. Packages mark their own error types with a FaultKind
// method rather than wrapping, so errors.As finds it through any %w chain.
type Kinded interface {
	error
	FaultKind() Kind
}

// KindOf is the kind of err: the first Kinded error in its chain decides; anything
// unmarked is Retryable.
func KindOf(err error) Kind {
	var k Kinded
	if errors.As(err, &k) {
		return k.FaultKind()
	}
	return Retryable
}

type marked struct {
	err  error
	kind Kind
}

func (m *marked) Error() string   { return m.err.Error() }
func (m *marked) Unwrap() error   { return m.err }
func (m *marked) FaultKind() Kind { return m.kind }

// Stall marks err as needing a person. Its message should say what to change.
func Stall(err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, kind: Stalled}
}

// Supersede marks err as replaced by newer work.
func Supersede(err error) error {
	if err == nil {
		return nil
	}
	return &marked{err: err, kind: Superseded}
}

// Backoff is a capped exponential backoff: Base after the first failure, doubling, never
// more than Max, plus up to a fifth of jitter.
type Backoff struct {
	Base, Max time.Duration
}

// After is when the attempt after the n-th consecutive failure (n >= 1) may run. The
// jitter is derived from key and n rather than drawn, so the same inputs give the same
// time (a pure planner can carry it as data) while different keys spread apart.
func (b Backoff) After(key string, n int, failed time.Time) time.Time {
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{byte(n), byte(n >> 8)})
	jitter := time.Duration(h.Sum64() % uint64(d/5+1))
	return failed.Add(d + jitter)
}
