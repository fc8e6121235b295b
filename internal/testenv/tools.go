package testenv

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// ToolsDir is where `make tools` put its outputs: $GILLIAM_TOOLS (the Makefile sets it), or
// the .cache folder at the root of this repository.
func ToolsDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("GILLIAM_TOOLS"); dir != "" {
		return dir
	}
	return filepath.Join(RepoRoot(t), ".cache")
}

// RepoRoot is the root of this repository: the first folder above the working directory
// that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// tool returns the path of a binary `make tools` built, failing the test when it is absent.
func tool(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(ToolsDir(t), "bin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("testenv: %s not found at %s: run `make tools` (make test does)", name, path)
	}
	return path
}

// FreePort returns a port on 127.0.0.1 that was free a moment ago for both TCP and UDP
// (Consul's gossip uses both). It picks below the kernel's ephemeral range (32768 and up
// on Linux), which outgoing connections draw from, so a port handed out is not taken by a
// connection before its server binds it; and never hands out the same port twice in a
// test process.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatal("testenv: no free port between 20000 and 32000")
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freeAddr is FreePort as "127.0.0.1:port".
func freeAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// Builder is the buildpack builder image tests build with: $GILLIAM_BUILDER (the Makefile
// sets it) or the default offline builder. The test fails when the engine does not have it.
func Builder(t testing.TB) string {
	t.Helper()
	name := os.Getenv("GILLIAM_BUILDER")
	if name == "" {
		name = "gilliam/builder:offline"
	}
	d := NewDocker(t)
	if _, err := d.Client.ImageInspect(context.Background(), name); err != nil {
		t.Fatalf("testenv: builder %s not in the engine: run `make tools` (make test does): %v", name, err)
	}
	return name
}

// Report records figures a test measured: it logs them and, when $GILLIAM_REPORTS names a
// folder (make test sets it), writes them to NAME.txt there, so `make test` can print every
// report at its end.
func Report(t testing.TB, name, text string) {
	t.Helper()
	t.Log("\n" + text)
	dir := os.Getenv("GILLIAM_REPORTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("testenv: report: %v", err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(text+"\n"), 0o644); err != nil {
		t.Logf("testenv: report: %v", err)
	}
}
