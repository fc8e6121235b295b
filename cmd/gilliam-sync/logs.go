package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/build"
	"github.com/gilliam-sync/gilliam-sync/internal/logstream"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// defaultBuildData is the build data directory of a sync daemon (or gilliam-sync up) run
// with its default --data: its build folder holds the build logs, pack's home and the
// notes of recent builds.
const defaultBuildData = ".gilliam/sync/build"

// defaultLogsToken is the logs token gilliam-sync up makes with its default --data.
const defaultLogsToken = ".gilliam/logs-token"

var logsCmd = &command{
	name:    "logs",
	usage:   "FORMATION [SERVICE] [--instance ID] [-f] [-n N] [--since D] | build FORMATION SERVICE [-f] [--data DIR]",
	summary: "print the logs of a formation's instances on every host, merged by time; `logs build` a service's latest build log",
	run:     runLogs,
}

func runLogs(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	follow := fs.Bool("follow", false, "keep printing new lines as they are written (of instances started later too; with build, the next builds' logs), until interrupted")
	fs.BoolVar(follow, "f", false, "short for --follow")
	lines := fs.Int("n", 100, "how many of the last lines to print first (at most 100000)")
	since := fs.String("since", "", "only lines written since then: a duration (10m, 2h) or an RFC 3339 time")
	instance := fs.String("instance", "", "only this instance's lines (its ID, as `gilliam-sync status` shows it)")
	tokenFile := fs.String("token-file", "", "file holding the logs token (default $GILLIAM_LOGS_TOKEN_FILE, else "+defaultLogsToken+", which gilliam-sync up writes)")
	data := fs.String("data", defaultBuildData, "build logs: the build data directory of the daemon that builds, read first when it is on this machine")
	newStore := consulFlags(fs)
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(positional) > 0 && positional[0] == "build" {
		if len(positional) != 3 {
			fmt.Fprintln(stderr, "gilliam-sync logs: want build FORMATION SERVICE")
			fs.Usage()
			return 2
		}
		return buildLogs(ctx, positional[1], positional[2], *data, *follow, *tokenFile, newStore, stdout, stderr)
	}
	if len(positional) < 1 || len(positional) > 2 {
		fmt.Fprintln(stderr, "gilliam-sync logs: want FORMATION [SERVICE], or build FORMATION SERVICE")
		fs.Usage()
		return 2
	}
	q := logstream.Query{Formation: positional[0], Instance: *instance, Tail: min(max(*lines, 0), logstream.MaxTail), Follow: *follow}
	if len(positional) == 2 {
		q.Service = positional[1]
	}
	if *since != "" {
		if q.Since, err = parseSince(*since, time.Now()); err != nil {
			fmt.Fprintln(stderr, "gilliam-sync logs: --since:", err)
			return 2
		}
	}
	if _, err := logstream.ParseQuery(q.Values()); err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 2
	}
	token, err := logsToken(*tokenFile)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 2
	}
	store, err := newStore()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 1
	}
	if err := instanceLogs(ctx, store, token, q, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 1
	}
	return 0
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration (10m) or an RFC 3339 time", s)
}

// logsToken is the token from --token-file, $GILLIAM_LOGS_TOKEN_FILE, or up's default.
func logsToken(file string) (string, error) {
	if file == "" {
		file = os.Getenv("GILLIAM_LOGS_TOKEN_FILE")
	}
	if file == "" {
		if _, err := os.Stat(defaultLogsToken); err != nil {
			return "", fmt.Errorf("no logs token: give --token-file (the file the daemons' --logs-token-file name), or set GILLIAM_LOGS_TOKEN_FILE")
		}
		file = defaultLogsToken
	}
	return logstream.LoadToken(file)
}

// logsClient reads logs streams: no overall timeout (a followed stream lasts), but a
// bounded wait for each connection and its first answer.
var logsClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil,
	ResponseHeaderTimeout: 30 * time.Second,
	IdleConnTimeout:       30 * time.Second,
}}

// logHosts are the hosts that serve logs, by host ID, from their status in Consul; and the
// hosts that run the formation's instances but serve none, for a warning.
func logHosts(ctx context.Context, store *state.Store, formation string) (map[string]string, []string, error) {
	snap, err := store.Snapshot(ctx, 0, 0)
	if err != nil {
		return nil, nil, err
	}
	serving := map[string]string{}
	for h, st := range snap.HostStatus {
		if st.Logs != "" {
			serving[h] = st.Logs
		}
	}
	var silent []string
	for h, a := range snap.Assignments {
		for _, inst := range a.Instances {
			if inst.Formation == formation && serving[h] == "" {
				silent = append(silent, h)
				break
			}
		}
	}
	sort.Strings(silent)
	return serving, silent, nil
}

// instanceLogs prints the logs of a formation's instances, asked of every host that serves
// logs: the last Tail lines over every host merged by time, then, following, every new
// line as it comes, from hosts that appear later too.
func instanceLogs(ctx context.Context, store *state.Store, token string, q logstream.Query, stdout, stderr io.Writer) error {
	hosts, silent, err := logHosts(ctx, store, q.Formation)
	if err != nil {
		return err
	}
	for _, h := range silent {
		fmt.Fprintf(stderr, "gilliam-sync logs: host %s runs instances of %s but serves no logs (its --logs-listen is not set)\n", h, q.Formation)
	}
	if len(hosts) == 0 {
		return fmt.Errorf("no host serves logs (see docs/observability.md)")
	}
	if !q.Follow {
		return printBacklog(ctx, hosts, token, q, stdout, stderr)
	}
	return followLogs(ctx, store, hosts, token, q, stdout, stderr)
}

func printBacklog(ctx context.Context, hosts map[string]string, token string, q logstream.Query, stdout, stderr io.Writer) error {
	var mu stdsync.Mutex
	var all []logstream.Record
	var wg stdsync.WaitGroup
	failed := 0
	for h, u := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got []logstream.Record
			err := logstream.Read(ctx, logsClient, u, logstream.Path, token, q.Values(), func(r logstream.Record) error {
				got = append(got, r)
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				fmt.Fprintf(stderr, "gilliam-sync logs: host %s: %v\n", h, err)
			}
			all = append(all, got...)
		}()
	}
	wg.Wait()
	for _, r := range lastLines(all, q.Tail) {
		fmt.Fprintln(stdout, logstream.Format(r))
	}
	if failed == len(hosts) {
		return errors.New("no host answered")
	}
	return nil
}

// lastLines sorts records by time and keeps the last n.
func lastLines(recs []logstream.Record, n int) []logstream.Record {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	if len(recs) > n {
		recs = recs[len(recs)-n:]
	}
	return recs
}

// followLogs follows every host: their backlogs merged first, then each line as it comes.
// Every few seconds it looks for hosts that serve logs and are not followed (new, or whose
// stream broke), and follows them from the time it started, or the last line they sent.
func followLogs(ctx context.Context, store *state.Store, hosts map[string]string, token string, q logstream.Query, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg stdsync.WaitGroup
	defer wg.Wait() // after cancel, below: the streams end with ctx
	defer cancel()
	type hostLine struct {
		host string
		rec  logstream.Record
		err  error
		end  bool
	}
	lines := make(chan hostLine, 1024)
	started := time.Now()
	var mu stdsync.Mutex
	followed := map[string]bool{}
	last := map[string]time.Time{} // the time of the last line each host sent
	follow := func(h, u string, hq logstream.Query) {
		mu.Lock()
		followed[h] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := logstream.Read(ctx, logsClient, u, logstream.Path, token, hq.Values(), func(r logstream.Record) error {
				select {
				case lines <- hostLine{host: h, rec: r}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			mu.Lock()
			delete(followed, h)
			mu.Unlock()
			select {
			case lines <- hostLine{host: h, err: err, end: true}:
			case <-ctx.Done():
			}
		}()
	}
	for h, u := range hosts {
		follow(h, u, q)
	}
	// The backlogs, until every host said live (or ended).
	var backlog []logstream.Record
	waiting := len(hosts)
	for waiting > 0 {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			switch {
			case l.end:
				waiting--
				if l.err != nil {
					fmt.Fprintf(stderr, "gilliam-sync logs: host %s: %v\n", l.host, l.err)
				}
			case l.rec.Mark == logstream.MarkLive:
				waiting--
			default:
				backlog = append(backlog, l.rec)
				last[l.host] = maxTime(last[l.host], l.rec.Time)
			}
		}
	}
	for _, r := range lastLines(backlog, q.Tail) {
		fmt.Fprintln(stdout, logstream.Format(r))
	}
	rescan := time.NewTicker(3 * time.Second)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case l := <-lines:
			switch {
			case l.end:
				if l.err != nil && ctx.Err() == nil {
					fmt.Fprintf(stderr, "gilliam-sync logs: host %s: %v (following it again)\n", l.host, l.err)
				}
			case l.rec.Mark != "":
			default:
				last[l.host] = maxTime(last[l.host], l.rec.Time)
				fmt.Fprintln(stdout, logstream.Format(l.rec))
			}
		case <-rescan.C:
			now, _, err := logHosts(ctx, store, q.Formation)
			if err != nil {
				continue
			}
			for h, u := range now {
				mu.Lock()
				on := followed[h]
				mu.Unlock()
				if on {
					continue
				}
				hq := q
				hq.Tail, hq.Since = logstream.MaxTail, maxTime(started, last[h].Add(time.Nanosecond))
				if !q.Since.IsZero() {
					hq.Since = maxTime(hq.Since, q.Since)
				}
				follow(h, u, hq)
			}
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// buildLogs prints a service's latest build log: from the build data directory when it is
// on this machine, else from the sync daemons that serve build logs (their Consul
// registrations say where).
func buildLogs(ctx context.Context, formation, service, data string, follow bool, tokenFile string, newStore storeFunc, stdout, stderr io.Writer) int {
	out := &escapingWriter{w: stdout}
	defer out.Flush()
	local := fmt.Errorf("%w for %s/%s in %s", build.ErrNoLogs, formation, service, build.LogDir(data, formation, service))
	if logs, _ := build.Logs(data, formation, service); len(logs) > 0 { // this machine built it
		if err := build.WriteLogs(ctx, data, formation, service, out, follow); err != nil {
			fmt.Fprintln(stderr, "gilliam-sync logs:", err)
			return 1
		}
		return 0
	}
	token, terr := logsToken(tokenFile)
	if terr != nil {
		fmt.Fprintf(stderr, "gilliam-sync logs: %v (is --data the builder's data directory?)\n", local)
		return 1
	}
	store, err := newStore()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 1
	}
	daemons, _, err := store.Client().Catalog().Service(state.SyncDaemonService, names.InstallationTag(store.Installation()), nil)
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 1
	}
	v := url.Values{"formation": {formation}, "service": {service}}
	if follow {
		v.Set("follow", "true")
	}
	for _, d := range daemons {
		base := d.ServiceMeta["logs"]
		if base == "" {
			continue
		}
		err := readBuildLog(ctx, base, token, v, out)
		if err == nil {
			return 0
		}
		if !errors.Is(err, build.ErrNoLogs) {
			fmt.Fprintf(stderr, "gilliam-sync logs: sync daemon %s: %v\n", d.ServiceMeta["daemon"], err)
		}
	}
	fmt.Fprintf(stderr, "gilliam-sync logs: %v, here or on any sync daemon that serves build logs\n", local)
	return 1
}

// readBuildLog copies a sync daemon's build log stream to w.
func readBuildLog(ctx context.Context, base, token string, v url.Values, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+logstream.BuildPath+"?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := logsClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return build.ErrNoLogs
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// escapingWriter writes each complete line escaped (logstream.Escape); Flush writes what
// is left of a last line without its newline.
type escapingWriter struct {
	w   io.Writer
	buf []byte
}

func (e *escapingWriter) Write(p []byte) (int, error) {
	e.buf = append(e.buf, p...)
	for {
		i := bytes.IndexByte(e.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if _, err := fmt.Fprintln(e.w, logstream.Escape(string(e.buf[:i]))); err != nil {
			return 0, err
		}
		e.buf = e.buf[i+1:]
	}
}

// Flush writes the rest.
func (e *escapingWriter) Flush() {
	if len(e.buf) > 0 {
		fmt.Fprint(e.w, logstream.Escape(string(e.buf)))
		e.buf = nil
	}
}
