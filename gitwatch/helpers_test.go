package gitwatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
)

// logs is a logger whose JSON lines tests read back.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLogs() (*slog.Logger, *logs) {
	l := &logs{}
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the log lines with message msg whose attributes include every key=value
// of attrs (values compared as printed).
func (l *logs) lines(msg string, attrs ...string) []map[string]any {
	var out []map[string]any
next:
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
			continue
		}
		for _, kv := range attrs {
			k, v, _ := strings.Cut(kv, "=")
			if fmt.Sprint(m[k]) != v {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}

// watch validates cfg and returns its watcher, its cache in a fresh folder.
func watch(t testing.TB, cfg gitwatch.RepoConfig, log *slog.Logger) *gitwatch.Watcher {
	t.Helper()
	return watchIn(t, cfg, t.TempDir(), log)
}

func watchIn(t testing.TB, cfg gitwatch.RepoConfig, dir string, log *slog.Logger) *gitwatch.Watcher {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w, err := gitwatch.Watch(cfg, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func poll(t testing.TB, w *gitwatch.Watcher) []gitwatch.Event {
	t.Helper()
	events, err := w.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// wantEvents fails unless got is exactly want (Repo included).
func wantEvents(t testing.TB, what string, got []gitwatch.Event, want ...gitwatch.Event) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", what, fmtEvents(got), fmtEvents(want))
	}
}

func fmtEvents(events []gitwatch.Event) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "\n  {%s %s %s pr=%d %.7s -> %.7s origin=%q}", e.Repo, e.Kind, e.Ref, e.PR, e.Old, e.New, e.Origin)
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// writeSecret writes a secret file and returns its path.
func writeSecret(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gitIn runs git in dir with a fixed identity (for what the harness has no helper for:
// annotated tags).
func gitIn(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
