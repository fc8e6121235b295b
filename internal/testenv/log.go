package testenv

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger is a logger for daemons a test runs in its own process: lines at level and above
// are kept, and the last lines (up to keep) are printed with the test's output only when it
// fails, so that a passing test stays quiet and a failing one says what its daemons did.
func Logger(t testing.TB, level slog.Level, keep int) *slog.Logger {
	t.Helper()
	b := &tail{keep: keep}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the last %d log lines of this test's daemons:\n%s", len(b.lines), strings.Join(b.lines, "\n"))
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level}))
}

// tail keeps the last keep lines written to it.
type tail struct {
	mu    sync.Mutex
	keep  int
	lines []string
}

func (b *tail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		b.lines = append(b.lines, string(l))
	}
	if over := len(b.lines) - b.keep; over > 0 {
		b.lines = append(b.lines[:0:0], b.lines[over:]...)
	}
	return len(p), nil
}
