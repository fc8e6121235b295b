package build

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Build logs live under the data dir, one file per build:
//
//	logs/<formation>/<service>/<start, UTC>-<commit>.running   while the build runs
//	logs/<formation>/<service>/<start, UTC>-<commit>.log       once it ended
//
// The start time leads the name, so names sort in the order builds started. A file holds at
// most maxLogBytes from the start of the build and the last tailBytes of the rest; the
// newest LogsPerService files of a service are kept.
const (
	maxLogBytes = 4 << 20
	tailBytes   = 64 << 10
	// tailLines is how much of the log's end a failed build's error carries: enough for a
	// compiler's error lines and what the buildpack printed after them.
	tailLines = 40

	runningExt = ".running"
	logExt     = ".log"
	timeLayout = "20060102T150405.000000000Z"
)

// LogDir is the folder of a service's build logs under a Builder's data dir.
func LogDir(dataDir, formation, service string) string {
	return filepath.Join(dataDir, "logs", formation, service)
}

// LogFile is one build's log.
type LogFile struct {
	Path    string
	Started time.Time
	// Running is true while the build runs (the file still grows).
	Running bool
}

// Logs lists a service's build logs, oldest first.
func Logs(dataDir, formation, service string) ([]LogFile, error) {
	entries, err := os.ReadDir(LogDir(dataDir, formation, service))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("build logs: %w", err)
	}
	var out []LogFile
	for _, e := range entries {
		n := e.Name()
		ext := filepath.Ext(n)
		if ext != logExt && ext != runningExt {
			continue
		}
		stamp, _, _ := strings.Cut(n, "-")
		started, err := time.Parse(timeLayout, stamp)
		if err != nil {
			continue
		}
		out = append(out, LogFile{Path: filepath.Join(LogDir(dataDir, formation, service), n),
			Started: started, Running: ext == runningExt})
	}
	sort.Slice(out, func(i, j int) bool { return filepath.Base(out[i].Path) < filepath.Base(out[j].Path) })
	return out, nil
}

// ErrNoLogs is returned by WriteLogs for a service that has no build log.
var ErrNoLogs = errors.New("no build log")

// WriteLogs copies a service's newest build log to w. With follow it then keeps copying:
// the rest of that log as the build writes it, then each newer build's log, until ctx ends
// (nil is returned then).
func WriteLogs(ctx context.Context, dataDir, formation, service string, w io.Writer, follow bool) error {
	const poll = 200 * time.Millisecond
	logs, err := Logs(dataDir, formation, service)
	if err != nil {
		return err
	}
	if len(logs) == 0 && !follow {
		return fmt.Errorf("%w for %s/%s in %s", ErrNoLogs, formation, service, LogDir(dataDir, formation, service))
	}
	last := ""
	for {
		if len(logs) > 0 {
			newest := logs[len(logs)-1]
			if key := logKey(newest.Path); key > last {
				if last != "" {
					fmt.Fprintln(w)
				}
				if err := copyLog(ctx, newest, w, follow); err != nil {
					return err
				}
				last = key
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
		if logs, err = Logs(dataDir, formation, service); err != nil {
			return err
		}
	}
}

// logKey is a log's name without its extension, the same while it runs and after.
func logKey(path string) string {
	return strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), runningExt), logExt)
}

// copyLog copies one log to w; when following a running build, it keeps reading until the
// build ends (its file is renamed to .log) or ctx ends.
func copyLog(ctx context.Context, l LogFile, w io.Writer, follow bool) error {
	f, err := os.Open(l.Path)
	if errors.Is(err, os.ErrNotExist) && l.Running { // it ended in between
		l.Path, l.Running = strings.TrimSuffix(l.Path, runningExt)+logExt, false
		f, err = os.Open(l.Path)
	}
	if err != nil {
		return fmt.Errorf("build log: %w", err)
	}
	defer f.Close()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return fmt.Errorf("build log: %w", err)
		}
		if !follow || !l.Running {
			return nil
		}
		if _, err := os.Stat(l.Path); err != nil { // renamed: the writer closed it
			_, err := io.Copy(w, f)
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// buildLog is one build's log: a bounded file, the last lines kept for an error, and every
// line streamed to the daemon's logger. Writes may come from several goroutines.
type buildLog struct {
	running, final string
	log            *slog.Logger

	mu      sync.Mutex
	f       *os.File
	size    int64  // bytes in the file
	dropped int64  // bytes left out of the file since it reached maxLogBytes
	end     []byte // the last tailBytes of what was left out
	lines   []string
	partial []byte
	closed  bool
}

func createLog(dataDir, formation, service, commit, tree string, start time.Time, log *slog.Logger) (*buildLog, error) {
	dir := LogDir(dataDir, formation, service)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	id := commit
	if id == "" {
		id = "tree-" + tree
	}
	base := filepath.Join(dir, start.UTC().Format(timeLayout)+"-"+short(id))
	f, err := os.Create(base + runningExt)
	if err != nil {
		return nil, fmt.Errorf("build log: %w", err)
	}
	return &buildLog{running: base + runningExt, final: base + logExt, log: log, f: f}, nil
}

func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	keep := p
	if room := maxLogBytes - l.size; int64(len(keep)) > room {
		keep = p[:max(room, 0)]
		rest := p[len(keep):]
		l.dropped += int64(len(rest))
		l.end = append(l.end, rest...)
		if len(l.end) > 2*tailBytes { // trimmed now and then, not on every write
			l.end = append(l.end[:0], l.end[len(l.end)-tailBytes:]...)
		}
	}
	if len(keep) > 0 {
		n, _ := l.f.Write(keep)
		l.size += int64(n)
	}
	l.scan(p)
	return len(p), nil
}

// scan splits p into lines for the tail and the logger; l.mu is held.
func (l *buildLog) scan(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) > 4096 { // a runaway line: take it in pieces
				l.line(string(l.partial))
				l.partial = l.partial[:0]
			}
			return
		}
		l.partial = append(l.partial, p[:i]...)
		l.line(string(l.partial))
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
}

// ansi matches the colour codes pack puts in its output: the file keeps them for a
// terminal, the logger and errors do not.
var ansi = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]`)

func (l *buildLog) line(s string) {
	s = ansi.ReplaceAllString(strings.TrimRight(s, "\r"), "")
	l.lines = append(l.lines, s)
	if len(l.lines) > 2*tailLines {
		l.lines = append([]string(nil), l.lines[len(l.lines)-tailLines:]...)
	}
	l.log.Info("build", "line", s)
}

// tail is the last lines written.
func (l *buildLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(l.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], string(l.partial))
	}
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return strings.Join(lines, "\n")
}

// close ends the log with a last line and gives the file its final name.
func (l *buildLog) close(last string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.dropped > 0 {
		end := l.end[max(0, len(l.end)-tailBytes):]
		fmt.Fprintf(l.f, "\n[gilliam-sync: %d bytes of this log left out; its last %d follow]\n", l.dropped-int64(len(end)), len(end))
		l.f.Write(end)
	}
	fmt.Fprintln(l.f, last)
	if err := l.f.Close(); err != nil {
		l.log.Warn("build log", "err", err)
	}
	if err := os.Rename(l.running, l.final); err != nil {
		l.log.Warn("build log", "err", err)
	}
}

// pruneLogs keeps the newest keep logs of a service; logs of running builds are not
// counted nor removed.
func pruneLogs(dataDir, formation, service string, keep int) error {
	logs, err := Logs(dataDir, formation, service)
	if err != nil {
		return err
	}
	var ended []LogFile
	for _, l := range logs {
		if !l.Running {
			ended = append(ended, l)
		}
	}
	var errs []error
	for len(ended) > keep {
		if err := os.Remove(ended[0].Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		ended = ended[1:]
	}
	return errors.Join(errs...)
}
