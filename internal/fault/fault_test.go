package fault_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

func TestKindOf(t *testing.T) {
	base := errors.New("boom")
	for _, c := range []struct {
		err  error
		want fault.Kind
	}{
		{base, fault.Retryable},
		{fault.Stall(base), fault.Stalled},
		{fmt.Errorf("wrapped: %w", fault.Stall(base)), fault.Stalled},
		{fault.Supersede(base), fault.Superseded},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", fault.Supersede(base))), fault.Superseded},
	} {
		if got := fault.KindOf(c.err); got != c.want {
			t.Errorf("KindOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if !errors.Is(fault.Stall(base), base) {
		t.Error("a marked error does not unwrap to its cause")
	}
	if fault.Stall(nil) != nil {
		t.Error("Stall(nil) is not nil")
	}
}

func TestBackoff(t *testing.T) {
	b := fault.Backoff{Base: 2 * time.Second, Max: 30 * time.Second}
	t0 := time.Unix(1000, 0)
	prev := time.Duration(0)
	for n := 1; n <= 10; n++ {
		d := b.After("k", n, t0).Sub(t0)
		base := min(2*time.Second<<(n-1), 30*time.Second)
		if d < base || d > base+base/5 {
			t.Errorf("attempt %d: %s, want %s plus at most a fifth", n, d, base)
		}
		if d+base/5 < prev {
			t.Errorf("attempt %d: %s shorter than the one before (%s)", n, d, prev)
		}
		prev = d
	}
	if b.After("k", 3, t0) != b.After("k", 3, t0) {
		t.Error("the same inputs gave different times")
	}
}
