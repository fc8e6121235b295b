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
			b.mu.Lock()
			last := b.last()
			b.mu.Unlock()
			t.Logf("the last %d log lines of this test's daemons:\n%s", len(last), strings.Join(last, "\n"))
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
	// Trimmed once it holds twice what it keeps, not at every line.
	if len(b.lines) >= 2*b.keep {
		b.lines = append(b.lines[:0:0], b.last()...)
	}
	return len(p), nil
}

// last is the last keep lines; b.mu is held.
func (b *tail) last() []string { return b.lines[max(0, len(b.lines)-b.keep):] }
