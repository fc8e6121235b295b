package hostd

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/gilliam-sync/gilliam-sync/internal/logstream"
)

// Instance logs. The engine keeps each container's output (json-file, 3 files of 10 MB);
// when the host daemon removes a container (a roll-out, a scale-down) it first copies its
// last ArchiveLines lines to DataDir/logs/<formation>/, so a formation's backlog outlives
// its instances. The archive is bounded per formation (LogArchiveBytes, the oldest files
// go first). LogsHandler serves both, merged by time, to `gilliam-sync logs`.

// Defaults of the log archive.
const (
	DefaultArchiveLines    = 10_000
	DefaultLogArchiveBytes = 16 << 20
)

// LogsHandler serves the logs of this host's instances at logstream.Path to requests that
// carry token: the backlog (the archive of removed instances and the engine's logs of the
// present ones, merged by time, the last Tail lines), then with follow every new line, of
// instances that start later too, until the client goes.
func (d *Daemon) LogsHandler(token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+logstream.Path, d.serveLogs)
	return logstream.Protect(token, mux)
}

func (d *Daemon) serveLogs(w http.ResponseWriter, r *http.Request) {
	q, err := logstream.ParseQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.cfg.Metrics.LogStream(1)
	defer d.cfg.Metrics.LogStream(-1)
	ctx := r.Context()
	w.Header().Set("Content-Type", "application/x-ndjson")
	out := logstream.NewWriter(w)
	backlog, seen, err := d.backlog(ctx, q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for _, rec := range backlog {
		if out.Write(rec) != nil {
			return
		}
	}
	if !q.Follow {
		return
	}
	if out.Write(logstream.Record{Mark: logstream.MarkLive}) != nil {
		return
	}
	d.follow(ctx, q, seen, out)
}

// logContainers lists this host's containers of a formation (every state).
func (d *Daemon) logContainers(ctx context.Context, q logstream.Query) ([]container.Summary, error) {
	args := filters.NewArgs(filters.Arg("label", LabelHost+"="+d.cfg.ID), filters.Arg("label", LabelFormation+"="+q.Formation))
	if q.Service != "" {
		args.Add("label", LabelService+"="+q.Service)
	}
	if q.Instance != "" {
		args.Add("label", LabelInstance+"="+q.Instance)
	}
	list, err := d.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: args})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return list, nil
}

// backlog is the last Tail lines the query wants, oldest first, and for each present
// container the time of its last line sent (or of the request), where following starts.
func (d *Daemon) backlog(ctx context.Context, q logstream.Query) ([]logstream.Record, map[string]time.Time, error) {
	now := time.Now()
	list, err := d.logContainers(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	var recs []logstream.Record
	if q.Tail > 0 {
		recs = d.readArchive(q)
	}
	seen := map[string]time.Time{}
	for _, c := range list {
		seen[c.ID] = now
		if q.Tail == 0 {
			continue
		}
		got, err := d.containerLogs(ctx, c, q, false, time.Time{}, func(logstream.Record) error { return nil })
		if err != nil {
			d.log.Debug("logs of a container not read", "container", shortID(c.ID), "err", err)
			continue
		}
		if len(got) > 0 && got[len(got)-1].Time.After(now) {
			seen[c.ID] = got[len(got)-1].Time // following starts after the last line sent
		}
		recs = append(recs, got...)
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	if len(recs) > q.Tail {
		recs = recs[len(recs)-q.Tail:]
	}
	return recs, seen, nil
}

// follow sends the new lines of every container of the query, present or started later,
// until ctx ends: it looks for new containers every second.
func (d *Daemon) follow(ctx context.Context, q logstream.Query, seen map[string]time.Time, out *logstream.Writer) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, below: the followers end with ctx
	defer cancel()
	lines := make(chan logstream.Record, 256)
	followed := map[string]bool{}
	start := func(c container.Summary, since time.Time) {
		followed[c.ID] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.containerLogs(ctx, c, q, true, since, func(r logstream.Record) error {
				select {
				case lines <- r:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil && ctx.Err() == nil {
				d.log.Debug("following a container's logs ended", "container", shortID(c.ID), "err", err)
			}
		}()
	}
	look := func() {
		list, err := d.logContainers(ctx, q)
		if err != nil {
			return
		}
		for _, c := range list {
			if !followed[c.ID] {
				start(c, seen[c.ID]) // zero for a container new since the backlog: all of it
			}
		}
	}
	look()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-lines:
			if out.Write(r) != nil {
				return
			}
		case <-tick.C:
			look()
		}
	}
}

// containerLogs reads a container's log (the last Tail lines, or with follow everything
// after since, as it is written), gives each record the query wants to each, and returns
// them when not following.
func (d *Daemon) containerLogs(ctx context.Context, c container.Summary, q logstream.Query, follow bool, since time.Time, each func(logstream.Record) error) ([]logstream.Record, error) {
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: follow}
	switch {
	case follow && !since.IsZero():
		opts.Since = strconv.FormatInt(since.Unix(), 10) + "." + fmt.Sprintf("%09d", since.Nanosecond())
	case !follow:
		opts.Tail = strconv.Itoa(q.Tail)
		if !q.Since.IsZero() {
			opts.Since = strconv.FormatInt(q.Since.Unix(), 10)
		}
	}
	rc, err := d.docker.ContainerLogs(ctx, c.ID, opts)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	base := logstream.Record{Host: d.cfg.ID, Instance: c.Labels[LabelInstance], Service: c.Labels[LabelService]}
	var out []logstream.Record
	err = demux(rc, func(stream string, line []byte) error {
		r := base
		r.Stream = stream
		ts, text, ok := strings.Cut(string(line), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			t, text = time.Now(), string(line)
		}
		r.Time, r.Line = t.UTC(), text
		if (follow && !since.IsZero() && !r.Time.After(since)) || !q.Match(r) {
			return nil
		}
		if !follow {
			out = append(out, r)
			return nil
		}
		return each(r)
	})
	return out, err
}

// demux splits the engine's multiplexed log stream (8-byte frame headers: the stream,
// then the length) into lines.
func demux(r io.Reader, line func(stream string, b []byte) error) error {
	br := bufio.NewReaderSize(r, 32<<10)
	var hdr [8]byte
	partial := map[byte][]byte{}
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			return err
		}
		n := binary.BigEndian.Uint32(hdr[4:])
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return nil
		}
		stream := map[byte]string{1: "stdout", 2: "stderr"}[hdr[0]]
		if stream == "" {
			continue
		}
		buf := append(partial[hdr[0]], payload...)
		for {
			i := strings.IndexByte(string(buf), '\n')
			if i < 0 {
				break
			}
			if err := line(stream, buf[:i]); err != nil {
				return err
			}
			buf = buf[i+1:]
		}
		partial[hdr[0]] = buf
	}
}

// archiveDir is where the logs of a formation's removed containers are kept.
func (d *Daemon) archiveDir(formation string) string {
	return filepath.Join(d.cfg.DataDir, "logs", formation)
}

// archiveLogs copies the last ArchiveLines lines of a container about to be removed to
// the formation's archive, then trims the archive to LogArchiveBytes. A failure is
// logged: it never holds up the removal.
func (d *Daemon) archiveLogs(ctx context.Context, id string) {
	info, err := d.docker.ContainerInspect(ctx, id)
	if err != nil || info.Config == nil {
		return
	}
	labels := info.Config.Labels
	formation := labels[LabelFormation]
	if formation == "" || strings.ContainsAny(formation, `/\.`) {
		return
	}
	c := container.Summary{ID: id, Labels: labels}
	recs, err := d.containerLogs(ctx, c, logstream.Query{Formation: formation, Tail: d.cfg.ArchiveLines}, false, time.Time{}, nil)
	if err != nil || len(recs) == 0 {
		return
	}
	dir := d.archiveDir(formation)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.log.Warn("instance logs not archived", "container", shortID(id), "err", err)
		return
	}
	// Named by the time of the last line, so the oldest archive sorts first; the container
	// ID makes a second archive of the same container replace the first.
	name := fmt.Sprintf("%020d-%s.ndjson", recs[len(recs)-1].Time.UnixNano(), shortID(id))
	if old, _ := filepath.Glob(filepath.Join(dir, "*-"+shortID(id)+".ndjson")); len(old) > 0 {
		for _, o := range old {
			_ = os.Remove(o)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		d.log.Warn("instance logs not archived", "container", shortID(id), "err", err)
		return
	}
	enc := json.NewEncoder(f)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			break
		}
	}
	f.Close()
	d.trimArchive(dir)
}

// trimArchive removes a formation's oldest archives until it holds at most
// LogArchiveBytes.
func (d *Daemon) trimArchive(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	sort.Strings(files)
	var total int64
	sizes := make([]int64, len(files))
	for i, f := range files {
		if fi, err := os.Stat(f); err == nil {
			sizes[i] = fi.Size()
			total += fi.Size()
		}
	}
	for i := 0; i < len(files) && total > d.cfg.LogArchiveBytes; i++ {
		if os.Remove(files[i]) == nil {
			total -= sizes[i]
		}
	}
}

// readArchive reads the archived lines of a formation the query wants.
func (d *Daemon) readArchive(q logstream.Query) []logstream.Record {
	files, _ := filepath.Glob(filepath.Join(d.archiveDir(q.Formation), "*.ndjson"))
	var out []logstream.Record
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var r logstream.Record
			if json.Unmarshal(sc.Bytes(), &r) == nil && q.Match(r) {
				out = append(out, r)
			}
		}
		f.Close()
	}
	return out
}
