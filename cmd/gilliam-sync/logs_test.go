package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
)

// gilliam-sync logs build prints the newest build log of a service; --follow prints a
// running build's output as it comes, and the builds after it.
func TestLogsBuild(t *testing.T) {
	data := t.TempDir()
	dir := build.LogDir(data, "shop", "web")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "20260101T000000.000000000Z-aaa.log"), []byte("old build\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "20260102T000000.000000000Z-bbb.log"), []byte("newest build\n"), 0o644)

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"logs", "build", "shop", "web", "--data", data}, &stdout, &stderr); code != 0 || stdout.String() != "newest build\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	stderr.Reset()
	if code := run(context.Background(), []string{"logs", "build", "shop", "api", "--data", data}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no build log for shop/api") {
		t.Fatalf("no logs: exit %d, stderr %q", code, stderr.String())
	}
	for _, args := range [][]string{{"logs"}, {"logs", "run", "shop", "web"}, {"logs", "build", "shop"}} {
		stderr.Reset()
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Fatalf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}

	// Following a build that runs, until it ends, then the next one.
	running := filepath.Join(dir, "20260103T000000.000000000Z-ccc.running")
	os.WriteFile(running, []byte("step 1\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"logs", "build", "shop", "web", "-f", "--data", data}, &out, &stderr)
	}()
	waitOutput(t, &out, "step 1\n")
	f, _ := os.OpenFile(running, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("step 2\n")
	f.Close()
	os.Rename(running, strings.TrimSuffix(running, ".running")+".log")
	waitOutput(t, &out, "step 1\nstep 2\n")
	os.WriteFile(filepath.Join(dir, "20260104T000000.000000000Z-ddd.running"), []byte("next build\n"), 0o644)
	waitOutput(t, &out, "step 1\nstep 2\n\nnext build\n")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("--follow ended with %d: %s", code, stderr.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitOutput(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("output %q, want %q", out.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
