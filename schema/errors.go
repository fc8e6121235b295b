package schema

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// An Error is one problem in a gilliam.yml, where it is and what is wrong.
type Error struct {
	File   string `json:"file"`
	Line   int    `json:"line"`   // 1-based; 0 when the problem is the file as a whole
	Column int    `json:"column"` // 1-based; 0 when unknown (YAML syntax errors carry only a line)
	// Path names the value in the document: "services.web.ports[0]"; "" for the
	// document as a whole.
	Path string `json:"path"`
	Msg  string `json:"message"`
}

// Error formats the error as "file:line:column: path: message", the form compilers use and
// editors link, leaving out the parts that are unknown (a zero line or column, an empty
// path). The format is stable: golden files and tools depend on it.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// An ErrorList is every problem found in one file, in a stable order: by position, then
// path, then message. An error of this type means a person must change the file; retrying
// will not help.
type ErrorList []*Error

// Error joins the errors one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
}

// A path names a value in the document the way people write it: services.web.ports[0].
// Keys that are not plain words are quoted: env["MY VAR"].
type path string

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (p path) key(k string) path {
	k = truncate(k)
	if !plainKey.MatchString(k) {
		return p + path("["+strconv.Quote(k)+"]")
	}
	if p == "" {
		return path(k)
	}
	return p + "." + path(k)
}

func (p path) index(i int) path {
	return p + path("["+strconv.Itoa(i)+"]")
}

type position struct{ line, column int }

// maxEcho bounds how much of a key or value written in the file an error repeats: a
// hostile file must not turn one long string into megabytes of messages.
const maxEcho = 64

func truncate(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// code quotes a key or value written in the file for a message: `scale`.
func code(s string) string {
	return "`" + truncate(s) + "`"
}

// A report collects the errors of one file. The decoder records where each value it reads
// is written, so that the validator, which works on the decoded Go values, can point at
// the right line too.
type report struct {
	file string
	errs ErrorList
	pos  map[path]position
	// wrongType holds the paths of the values that are not even of the right YAML type
	// (a string where a mapping belongs): nothing can be said about what they hold.
	wrongType map[path]bool
	// decoded holds the paths of the errors found while decoding, sorted, once decoding
	// is done: failed looks them up.
	decoded []string
}

func newReport(file string) *report {
	return &report{file: file, pos: make(map[path]position), wrongType: make(map[path]bool)}
}

// at reports a problem with the value n at p.
func (r *report) at(n *yaml.Node, p path, format string, args ...any) {
	r.add(position{n.Line, n.Column}, p, fmt.Sprintf(format, args...))
}

// on reports a problem with the value at p, positioned where the decoder found it.
func (r *report) on(p path, format string, args ...any) {
	r.add(r.pos[p], p, fmt.Sprintf(format, args...))
}

func (r *report) add(at position, p path, msg string) {
	r.errs = append(r.errs, &Error{File: r.file, Line: at.line, Column: at.column, Path: string(p), Msg: msg})
}

// record notes where the value at p is written.
func (r *report) record(p path, n *yaml.Node) {
	r.pos[p] = position{n.Line, n.Column}
}

// has reports whether the value at p is written in the file (rather than defaulted).
func (r *report) has(p path) bool {
	_, ok := r.pos[p]
	return ok
}

// decodingDone marks the end of decoding: the errors found so far are the ones failed
// knows.
func (r *report) decodingDone() {
	r.decoded = make([]string, len(r.errs))
	for i, e := range r.errs {
		r.decoded[i] = e.Path
	}
	slices.Sort(r.decoded)
}

// failed reports whether decoding found a problem at p or inside it, so that a rule does
// not pile a consequence on top of its cause.
func (r *report) failed(p path) bool {
	s := string(p)
	i, _ := slices.BinarySearch(r.decoded, s)
	for ; i < len(r.decoded) && strings.HasPrefix(r.decoded[i], s); i++ {
		if rest := r.decoded[i][len(s):]; rest == "" || rest[0] == '.' || rest[0] == '[' {
			return true
		}
	}
	return false
}

// result returns the errors, sorted, or nil when there are none.
func (r *report) result() error {
	if len(r.errs) == 0 {
		return nil
	}
	r.errs.sort()
	return r.errs
}
