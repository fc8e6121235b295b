package build

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var discard = slog.New(slog.DiscardHandler)

// A log that outgrows maxLogBytes keeps its start and its end, and says what it left out;
// the tail for errors holds the last lines, colour codes removed.
func TestBuildLogIsBounded(t *testing.T) {
	dir := t.TempDir()
	l, err := createLog(dir, "f", "s", "abc", "", time.Now(), discard)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 99) + "\n"
	for written := 0; written < 2*maxLogBytes; written += len(line) {
		l.Write([]byte(line))
	}
	l.Write([]byte("\x1b[31;1mERROR: \x1b[0mthe last line\n"))
	l.close("gilliam-sync: done")

	info, err := os.Stat(l.final)
	if err != nil {
		t.Fatal(err)
	}
	if max := int64(maxLogBytes + tailBytes + 200); info.Size() > max {
		t.Fatalf("log is %d bytes, want at most %d", info.Size(), max)
	}
	text, _ := os.ReadFile(l.final)
	if !bytes.Contains(text, []byte("bytes of this log left out")) || !bytes.HasSuffix(text, []byte("the last line\ngilliam-sync: done\n")) {
		t.Fatalf("log end: %q", text[len(text)-300:])
	}
	if tail := l.tail(); !strings.HasSuffix(tail, "\nERROR: the last line") || strings.Count(tail, "\n") != tailLines-1 {
		t.Fatalf("tail has %d lines, ends %q", strings.Count(tail, "\n")+1, tail[len(tail)-40:])
	}
	if _, err := os.Stat(l.running); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the .running file is still there: %v", err)
	}
}

// Pruning keeps the newest logs of a service, and never a running build's.
func TestPruneLogsKeepsNewest(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var names []string
	for i := range 5 {
		l, err := createLog(dir, "f", "s", "c"+string(rune('0'+i)), "", start.Add(time.Duration(i)*time.Minute), discard)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, l.final)
		if i < 4 {
			l.close("done")
		}
	}
	if err := pruneLogs(dir, "f", "s", 2); err != nil {
		t.Fatal(err)
	}
	logs, err := Logs(dir, "f", "s")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range logs {
		got = append(got, strings.TrimSuffix(l.Path, runningExt))
	}
	want := []string{names[2], names[3], strings.TrimSuffix(names[4], logExt)}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || !logs[2].Running {
		t.Fatalf("kept %v, want %v (the last running)", got, want)
	}
}

// WriteLogs prints the newest log; following, it prints a running build's output as it
// comes, then the next build's, until its context ends.
func TestWriteLogsFollows(t *testing.T) {
	dir := t.TempDir()
	if err := WriteLogs(context.Background(), dir, "f", "s", &bytes.Buffer{}, false); !errors.Is(err, ErrNoLogs) {
		t.Fatalf("no logs: %v", err)
	}
	start := time.Now()
	old, _ := createLog(dir, "f", "s", "old", "", start, discard)
	old.Write([]byte("old build\n"))
	old.close("old done")
	var out bytes.Buffer
	if err := WriteLogs(context.Background(), dir, "f", "s", &out, false); err != nil || out.String() != "old build\nold done\n" {
		t.Fatalf("newest log: %q, %v", out.String(), err)
	}

	cur, _ := createLog(dir, "f", "s", "cur", "", start.Add(time.Second), discard)
	cur.Write([]byte("step 1\n"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var followed syncWriter
	done := make(chan error, 1)
	go func() { done <- WriteLogs(ctx, dir, "f", "s", &followed, true) }()

	waitFor(t, &followed, "step 1\n")
	cur.Write([]byte("step 2\n"))
	cur.close("cur done")
	waitFor(t, &followed, "step 1\nstep 2\ncur done\n")

	next, _ := createLog(dir, "f", "s", "next", "", start.Add(2*time.Second), discard)
	next.Write([]byte("next build\n"))
	waitFor(t, &followed, "step 1\nstep 2\ncur done\n\nnext build\n")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	next.close("")
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func waitFor(t *testing.T, w *syncWriter, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("followed %q, want %q", w.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
