package sync_test

import (
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// randomImage pushes a small random image to reg, for image services that never run (the
// tests that use it have no host daemon), and returns its tag.
func randomImage(t *testing.T, reg *testenv.Registry) string {
	t.Helper()
	testenv.PushRandomImage(t, reg.Addr, "test/random", "latest")
	return reg.Addr + "/test/random:latest"
}
