package schema

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Reading the YAML document of a gilliam.yml, which may come from anyone who can open a
// pull request: the file is bounded in size before it is parsed, and the parsed document,
// before it is decoded, in what it expands to through aliases: values, text and depth.
// Within these bounds the decoder walks at most maxValues nodes holding at most maxText
// bytes, so time and memory stay small whatever the input.

const (
	// maxValues bounds the values of the document counted as the decoder sees them, with
	// every alias replaced by what it names. A real gilliam.yml has a few hundred; a
	// "billion laughs" alias bomb would have billions.
	maxValues = 100_000
	// maxText bounds the bytes of the document's scalars, aliases expanded: without it, a
	// long string named by thousands of aliases would be checked thousands of times.
	// Without aliases a document holds at most MaxFileSize.
	maxText = 4 * MaxFileSize
	// maxDepth bounds how deeply values nest, aliases expanded. The format itself needs 6.
	maxDepth = 32
)

// readDocument parses data as one YAML document within the limits and returns its root
// value, or reports why it cannot and returns nil.
func readDocument(r *report, data []byte) *yaml.Node {
	if len(data) > MaxFileSize {
		r.add(position{}, "", fmt.Sprintf("the file is larger than %s, the limit", formatSize(MaxFileSize)))
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decodeYAML(dec, &doc); err != nil {
		if err == io.EOF {
			r.add(position{}, "", "the file is empty: a gilliam.yml needs at least `services`")
		} else {
			r.add(syntaxError(err))
		}
		return nil
	}
	var second yaml.Node
	switch err := decodeYAML(dec, &second); {
	case err == nil:
		r.add(position{second.Line, second.Column}, "", "a second YAML document begins here: a gilliam.yml holds one")
		return nil
	case err != io.EOF:
		r.add(syntaxError(err))
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		r.add(position{}, "", "the file is empty: a gilliam.yml needs at least `services`")
		return nil
	}
	m := measure{r: r, seen: make(map[*yaml.Node]extent), open: make(map[*yaml.Node]bool)}
	if _, ok := m.walk(root, 1); !ok {
		return nil
	}
	return root
}

// decodeYAML decodes the next document into n. yaml.v3 reports malformed input by
// panicking internally and recovering; should one of its panics escape (a bug of the
// parser, not of the input), it becomes an error here rather than a crash of the control
// plane. Our own code is not covered: its bugs must crash tests.
func decodeYAML(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("yaml: the YAML parser failed on this input: %v", v)
		}
	}()
	return dec.Decode(n)
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yaml.v3 counts lines from 0 in the errors of its parser, and from 1 in those of its
// scanner; these are the parser's. For the "did not find expected" ones the line is where
// the enclosing block or flow collection begins.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// syntaxError positions a yaml.v3 error: its text carries a line, not a column.
func syntaxError(err error) (position, path, string) {
	msg := err.Error()
	var at position
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		at.line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if parserProblems[msg] {
			at.line++
		}
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	return at, "", "invalid YAML: " + truncate(msg)
}

// A measure walks the document with aliases expanded, without expanding them: the extent
// of each node is computed once and reused wherever an alias names it, so a bomb costs no
// more to measure than its own few lines.
type measure struct {
	r       *report
	seen    map[*yaml.Node]extent
	open    map[*yaml.Node]bool // nodes being walked: an alias to one of them is a loop
	aliases bool                // whether an alias was followed, for the message
}

// The extent of a node: how many values it expands to, itself included, the bytes of
// their text, and how many levels deep they go below it.
type extent struct{ values, text, depth int }

// walk measures n found at level (the root is at level 1) and reports the first limit it
// breaks.
func (m *measure) walk(n *yaml.Node, level int) (extent, bool) {
	if level > maxDepth {
		m.r.at(n, "", "values nest more than %d levels deep", maxDepth)
		return extent{}, false
	}
	if n.Kind == yaml.AliasNode {
		m.aliases = true
		if m.open[n.Alias] {
			m.r.at(n, "", "the alias *%s is used inside the value it names", truncate(n.Value))
			return extent{}, false
		}
		n = n.Alias
	}
	if e, ok := m.seen[n]; ok {
		return e, m.check(n, level, e)
	}
	m.open[n] = true
	e := extent{values: 1, text: len(n.Value)}
	for _, c := range n.Content {
		ce, ok := m.walk(c, level+1)
		if !ok {
			return extent{}, false
		}
		e.values += ce.values
		e.text += ce.text
		e.depth = max(e.depth, ce.depth+1)
		if !m.check(n, level, e) {
			return extent{}, false
		}
	}
	delete(m.open, n)
	m.seen[n] = e
	return e, true
}

// check reports whether the node n, found at level with extent e, stays within the limits.
func (m *measure) check(n *yaml.Node, level int, e extent) bool {
	switch {
	case level+e.depth > maxDepth:
		m.r.at(n, "", "values nest more than %d levels deep", maxDepth)
		return false
	case e.values > maxValues && m.aliases:
		m.r.at(n, "", "this value expands to more than %d values through aliases", maxValues)
		return false
	case e.values > maxValues:
		m.r.at(n, "", "the document has more than %d values", maxValues)
		return false
	case e.text > maxText:
		m.r.at(n, "", "this value expands to more than %s of text through aliases", formatSize(maxText))
		return false
	}
	return true
}
