package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// builtBinary is a build of gilliam-sync, made once per test process.
type builtBinary struct {
	once sync.Once
	path string
	err  error
}

var plainBinary, raceBinary builtBinary

// Binary builds bin/gilliam-sync from this repository once per test process and returns its
// path. It is built next to the test binary, in the folder `go test` removes when the
// package's tests end.
//
// The program is built without -race unless GILLIAM_RACE_DAEMONS=1 and the test runs under
// -race: then a data race in a daemon a test runs fails that test (see Start). The daemons'
// packages (sync, hostd, build, gitwatch, cmd) run their own tests under -race in make test,
// and a few end-to-end tests use RaceBinary; race-built daemons in every end-to-end test cost
// about 130 CPU-seconds of a 2-core run (their pushes gzip under the detector), a fifth of
// the suite (docs/testing.md).
func Binary(t testing.TB) string {
	t.Helper()
	if os.Getenv("GILLIAM_RACE_DAEMONS") == "1" {
		return RaceBinary(t)
	}
	return plainBinary.build(t, false)
}

// RaceBinary is Binary built with -race whenever the test runs under -race (make test),
// whatever GILLIAM_RACE_DAEMONS says: for the end-to-end tests that keep the daemons'
// cross-process paths under the race detector (no builds in them, so no gzip to pay for).
func RaceBinary(t testing.TB) string {
	t.Helper()
	return raceBinary.build(t, raceEnabled)
}

func (b *builtBinary) build(t testing.TB, race bool) string {
	t.Helper()
	b.once.Do(func() {
		parent := ""
		if exe, err := os.Executable(); err == nil {
			parent = filepath.Dir(exe)
		}
		dir, err := os.MkdirTemp(parent, "gilliam-sync-bin-")
		if err != nil && parent != "" {
			dir, err = os.MkdirTemp("", "gilliam-sync-bin-")
		}
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "gilliam-sync")
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/gilliam-sync")...)
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatalf("testenv: build gilliam-sync: %v", b.err)
	}
	return b.path
}

// Process is a program run by a test, its JSON log lines (slog's JSON handler, on stderr)
// collected for assertions. t.Cleanup stops it.
type Process struct {
	t      testing.TB
	cmd    *exec.Cmd
	exited chan struct{}

	mu    sync.Mutex
	lines []LogLine
	raw   strings.Builder
}

// LogLine is one JSON log line: its time, message and every attribute.
type LogLine struct {
	Time  time.Time
	Msg   string
	Attrs map[string]any
}

// Start runs bin with args and extra environment. Its stderr is parsed as JSON log lines;
// stdout and anything unparsable are kept for Output. At cleanup, a data race the program
// reported (a -race build, see Binary) fails the test with the report.
func Start(t testing.TB, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.read(stderr) }()
	go func() { defer readers.Done(); p.read(stdout) }()
	go func() {
		readers.Wait()
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if races := p.Races(); len(races) > 0 {
			t.Errorf("%s reported %d data race(s):\n%s", filepath.Base(bin), len(races), strings.Join(races, "\n"))
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), p.Output())
		}
	})
	return p
}

func (p *Process) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		p.mu.Lock()
		p.raw.WriteString(line + "\n")
		if json.Unmarshal([]byte(line), &m) == nil {
			l := LogLine{Attrs: m}
			l.Msg, _ = m["msg"].(string)
			if ts, ok := m["time"].(string); ok {
				l.Time, _ = time.Parse(time.RFC3339Nano, ts)
			}
			p.lines = append(p.lines, l)
		}
		p.mu.Unlock()
	}
}

// Output is everything the process wrote so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.raw.String()
}

// Races returns the data race reports the program wrote so far (a -race build writes each
// between two lines of "==================").
func (p *Process) Races() []string {
	var races []string
	const sep = "==================\n"
	for _, part := range strings.Split(p.Output(), sep) {
		if strings.HasPrefix(part, "WARNING: DATA RACE") {
			races = append(races, part)
		}
	}
	return races
}

// Lines returns every log line so far.
func (p *Process) Lines() []LogLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]LogLine(nil), p.lines...)
}

// Logs returns the log lines with message msg whose attributes include every key=value of
// attrs (values compared as printed), in order.
func (p *Process) Logs(msg string, attrs ...string) []LogLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []LogLine
next:
	for _, l := range p.lines {
		if l.Msg != msg {
			continue
		}
		for _, kv := range attrs {
			k, v, _ := strings.Cut(kv, "=")
			if fmt.Sprint(l.Attrs[k]) != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// WaitLog waits until a log line matching msg and attrs appears, and returns the first.
func (p *Process) WaitLog(limit time.Duration, msg string, attrs ...string) LogLine {
	p.t.Helper()
	var found []LogLine
	Eventually(p.t, limit, fmt.Sprintf("log %q %v", msg, attrs), func() bool {
		found = p.Logs(msg, attrs...)
		return len(found) > 0
	})
	return found[0]
}

// Stop sends SIGTERM and waits (SIGKILL after 15 seconds).
func (p *Process) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill sends SIGKILL, like a crash or kill -9, and waits for the process to be gone.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}
