package logstream

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Path is where a host daemon serves its instances' logs; BuildPath where a sync daemon
// serves its build logs.
const (
	Path      = "/v1/logs"
	BuildPath = "/v1/build-logs"
)

// MaxTail is the most lines one request may ask for.
const MaxTail = 100_000

// Record is one line an instance wrote, or, with Mark set, a marker in the stream:
// MarkLive says the backlog is over and what follows is written as it happens.
type Record struct {
	Time     time.Time `json:"time,omitzero"`
	Host     string    `json:"host,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Service  string    `json:"service,omitempty"`
	Stream   string    `json:"stream,omitempty"` // stdout or stderr
	Line     string    `json:"line,omitempty"`
	Mark     string    `json:"mark,omitempty"`
}

// MarkLive ends the backlog of a followed stream.
const MarkLive = "live"

// Query says which logs a request wants.
type Query struct {
	Formation string
	Service   string // "": every service
	Instance  string // "": every instance
	// Tail is how many of the last lines of the backlog (0: none; at most MaxTail).
	Tail int
	// Since drops lines written before it (zero: none dropped).
	Since time.Time
	// Follow keeps the stream open, sending new lines as they are written, of instances
	// that start later too.
	Follow bool
}

// Values encodes a query as URL parameters.
func (q Query) Values() url.Values {
	v := url.Values{"formation": {q.Formation}, "tail": {strconv.Itoa(q.Tail)}}
	if q.Service != "" {
		v.Set("service", q.Service)
	}
	if q.Instance != "" {
		v.Set("instance", q.Instance)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	return v
}

// ParseQuery reads a query from a request's URL parameters.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Formation: v.Get("formation"), Service: v.Get("service"), Instance: v.Get("instance"), Follow: v.Get("follow") == "true"}
	if q.Formation == "" {
		return q, errors.New("formation is required")
	}
	for what, name := range map[string]string{"formation": q.Formation, "service": q.Service, "instance": q.Instance} {
		if name != "" && !ValidName(name) {
			return q, fmt.Errorf("%s %q: want lowercase letters, digits and dashes", what, name)
		}
	}
	if t := v.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return q, fmt.Errorf("tail %q: want a number of lines", t)
		}
		q.Tail = min(n, MaxTail)
	}
	if s := v.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, fmt.Errorf("since %q: want an RFC 3339 time", s)
		}
		q.Since = t
	}
	return q, nil
}

// ValidName says whether s may name a formation, service or instance in a request:
// lowercase letters, digits and dashes, as gilliam.yml's names (so no path can be made of
// one).
func ValidName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Match says whether a record from formation's logs is one the query wants.
func (q Query) Match(r Record) bool {
	return (q.Service == "" || r.Service == q.Service) && (q.Instance == "" || r.Instance == q.Instance) &&
		(q.Since.IsZero() || !r.Time.Before(q.Since))
}

// Authorized says whether a request carries the token (compared in constant time). An
// empty token authorizes nothing.
func Authorized(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Protect answers 401 to a request without the token, and passes the others to h.
func Protect(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !Authorized(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gilliam-sync logs"`)
			http.Error(w, "a logs token is required (Authorization: Bearer ...)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Writer writes records as newline-delimited JSON, flushing after each when the
// response can.
type Writer struct {
	w   io.Writer
	enc *json.Encoder
}

// NewWriter starts a stream of records on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, enc: json.NewEncoder(w)}
}

// Write sends one record.
func (w *Writer) Write(r Record) error {
	if err := w.enc.Encode(r); err != nil {
		return err
	}
	if f, ok := w.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

// Read streams the records of base+path?query to each until the stream ends, ctx ends,
// or each returns an error.
func Read(ctx context.Context, client *http.Client, base, path, token string, v url.Values, each func(Record) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+path+"?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", base, resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: a record that is not JSON: %w", base, err)
		}
		if err := each(r); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("%s: %w", base, err)
	}
	return nil
}

// Escape shows a line safely on a terminal: control characters (an escape sequence's
// ESC, NUL, DEL) become \xNN, carriage returns and newlines \r and \n, C1 controls
// \u00NN, bytes that are not UTF-8 \xNN; tabs, backslashes and every printable character
// stay as written.
func Escape(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); {
		r, size := utf8.DecodeRuneInString(line[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, line[i])
		case r == '\t':
			b.WriteRune(r)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(line[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Format is how `gilliam-sync logs` prints a record: time, instance, host, then the line,
// escaped.
func Format(r Record) string {
	return fmt.Sprintf("%s %s %s | %s", r.Time.UTC().Format("2006-01-02T15:04:05.000000Z"), r.Instance, r.Host, Escape(r.Line))
}

// NewToken makes a random token: 32 bytes, hex.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// LoadToken reads a token from a file (surrounding space trimmed); an empty file is
// refused.
func LoadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("logs token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("logs token %s: the file is empty", path)
	}
	return t, nil
}

// LoadOrCreateToken reads the token in path, or makes one and writes it there (0600).
func LoadOrCreateToken(path string) (string, error) {
	if t, err := LoadToken(path); err == nil {
		return t, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	t, err := NewToken()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("logs token: %w", err)
	}
	return t, nil
}
