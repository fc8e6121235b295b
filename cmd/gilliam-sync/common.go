package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// storeFunc opens the store the flags name; a daemon passes its metrics, so its Consul
// requests and their errors are counted (gilliam_consul_requests_total).
type storeFunc func(m ...*metrics.Metrics) (*state.Store, error)

// consulFlags adds the flags that reach Consul. The client otherwise follows Consul's own
// environment: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT and the rest.
func consulFlags(fs *flag.FlagSet) storeFunc {
	addr := fs.String("consul", "", "Consul HTTP address (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	prefix := fs.String("prefix", state.DefaultPrefix, "Consul KV prefix of gilliam-sync's state")
	return func(m ...*metrics.Metrics) (*state.Store, error) {
		cfg := api.DefaultConfig()
		if *addr != "" {
			cfg.Address = *addr
		}
		if len(m) > 0 && m[0] != nil && !strings.HasPrefix(cfg.Address, "unix://") {
			hc, err := api.NewHttpClient(cfg.Transport, cfg.TLSConfig)
			if err != nil {
				return nil, fmt.Errorf("consul client: %w", err)
			}
			hc.Transport = m[0].Transport(hc.Transport)
			cfg.HttpClient = hc
		}
		client, err := api.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("consul client: %w", err)
		}
		return state.NewStore(client, *prefix), nil
	}
}

// repoFlags name one repository, its branch and its gilliam.yml: up, sync and plan take
// them (sync also takes a whole watch list from its configuration file).
type repoFlags struct {
	url, ref, file *string
	poll           *time.Duration // nil where there is no polling (plan)
}

// addRepoFlags adds --repo, --ref, --file and, with a non-zero default, --poll.
func addRepoFlags(fs *flag.FlagSet, poll time.Duration) repoFlags {
	r := repoFlags{
		url:  fs.String("repo", "", "the repository: a clone URL or a local path"),
		ref:  fs.String("ref", "main", "the branch deployed"),
		file: fs.String("file", "gilliam.yml", "path of the gilliam.yml in the repository"),
	}
	if poll > 0 {
		r.poll = fs.Duration("poll", poll, "how often the repository is polled")
	}
	return r
}

// config is the watch-list entry the flags describe.
func (r repoFlags) config() gitwatch.RepoConfig {
	c := gitwatch.RepoConfig{URL: localPath(*r.url), Branches: []string{*r.ref}, Files: []string{*r.file}}
	if r.poll != nil {
		c.PollInterval = *r.poll
	}
	return c
}

// localPath makes a repository given as a local folder absolute; URLs pass unchanged.
func localPath(repo string) string {
	if fi, err := os.Stat(repo); err == nil && fi.IsDir() {
		if abs, err := filepath.Abs(repo); err == nil {
			return abs
		}
	}
	return repo
}

// logFlags adds --log-format and --log-level; the logger writes to w.
func logFlags(fs *flag.FlagSet, w io.Writer) func() (*slog.Logger, error) {
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	return func() (*slog.Logger, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: %w", *level, err)
		}
		opts := &slog.HandlerOptions{Level: l}
		switch strings.ToLower(*format) {
		case "text":
			return slog.New(slog.NewTextHandler(w, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(w, opts)), nil
		}
		return nil, fmt.Errorf("--log-format %q: want text or json", *format)
	}
}

// labelsFlag parses k=v,k=v.
type labelsFlag map[string]string

func (l labelsFlag) String() string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (l labelsFlag) Set(s string) error {
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("label %q: want key=value", kv)
		}
		l[k] = v
	}
	return nil
}
