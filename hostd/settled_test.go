package hostd

import (
	"context"
	"testing"
	"time"
)

// A create's context outlives the daemon's (stopping waits for the engine's answer) and
// still has a deadline.
func TestSettledOutlivesTheDaemonsContext(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := settled(parent)
	defer cancel()
	stop()
	if err := ctx.Err(); err != nil {
		t.Fatalf("the create's context ended with the daemon's: %v", err)
	}
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > createTimeout {
		t.Fatalf("deadline %v (set: %v), want within %v", dl, ok, createTimeout)
	}
}
