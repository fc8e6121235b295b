package schema

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// A field is one key of a gilliam.yml mapping: its documentation, default and JSON Schema,
// and how its value is decoded into the Go type T. The tables of fields.go are made of
// fields; the decoder, the JSON Schema and the reference in docs/gilliam-yml.md all follow
// those tables, so they cannot disagree.
type field[T any] struct {
	key string
	doc string
	// def is the default as it would be written in the file: a string, an int, a bool, or
	// emptyMapping for a nested object whose own fields have defaults. The decoder applies
	// it by decoding it as if it were written, so a key left out and a key set to its
	// documented default give the same result. nil: no default, or one that depends on
	// other fields (documented in doc and applied by the decoder).
	def      any
	required bool
	schema   *jsonSchema
	decode   func(d *decoder, n *yaml.Node, p path, into *T)
}

// emptyMapping is the default of a nested object: decoding it applies the defaults of
// the object's fields.
type emptyMappingType struct{}

var emptyMapping = emptyMappingType{}

// The constructors below pair a kind of value with its decoder and its JSON Schema. Each
// takes the key, a function that points into the Go value, what the kind needs, and the
// documentation.

// text is a string, checked and possibly normalized by parse; pattern is the part of the
// syntax a JSON Schema can say.
func text[T any](key string, at func(*T) *string, pattern string, parse func(string) (string, error), doc string) field[T] {
	return field[T]{key: key, doc: doc, schema: stringSchema(pattern),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			s, ok := d.str(n, p)
			if !ok {
				return
			}
			v, err := parse(s)
			if err != nil {
				d.at(n, p, "%v", err)
				return
			}
			*at(into) = v
		}}
}

// matching returns a parse function for text that accepts what re matches.
func matching(pattern, what string) func(string) (string, error) {
	re := regexp.MustCompile(pattern)
	return func(s string) (string, error) {
		if !re.MatchString(s) {
			return "", fmt.Errorf("%s is not %s", code(s), what)
		}
		return s, nil
	}
}

// enum is a string among values.
func enum[T any](key string, at func(*T) *string, values []string, doc string) field[T] {
	return field[T]{key: key, doc: doc, schema: enumSchema(values),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			s, ok := d.str(n, p)
			if !ok {
				return
			}
			if !slices.Contains(values, s) {
				d.at(n, p, "%s is not one of %s%s", code(s), codeList(values), didYouMean(s, values))
				return
			}
			*at(into) = s
		}}
}

// integer is a decimal integer between lo and hi.
func integer[T any](key string, at func(*T) *int, lo, hi int, def any, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: def, schema: integerSchema(lo, hi),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			if v, ok := d.integer(n, p, lo, hi); ok {
				*at(into) = v
			}
		}}
}

// optionalInteger is an integer that may be left out, which nil says.
func optionalInteger[T any](key string, at func(*T) **int, lo, hi int, doc string) field[T] {
	return field[T]{key: key, doc: doc, schema: integerSchema(lo, hi),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			if v, ok := d.integer(n, p, lo, hi); ok {
				*at(into) = &v
			}
		}}
}

// boolean is true or false.
func boolean[T any](key string, at func(*T) *bool, def bool, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: def, schema: booleanSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			if v, ok := d.boolean(n, p); ok {
				*at(into) = v
			}
		}}
}

// duration is a Go duration of at least lo.
func duration[T any](key string, at func(*T) *time.Duration, lo, def time.Duration, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: formatDuration(def), schema: durationSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			if v := resolve(n); v.ShortTag() == "!!int" || v.ShortTag() == "!!float" {
				d.at(n, p, "%s needs a unit, such as `%ss` for seconds", code(v.Value), truncate(v.Value))
				return
			}
			s, ok := d.scalar(n, p, "a duration such as `10s`", "!!str")
			if !ok {
				return
			}
			v, err := parseDuration(s)
			if err != nil {
				d.at(n, p, "%v", err)
				return
			}
			if v < lo {
				d.at(n, p, "must be at least %s", formatDuration(lo))
				return
			}
			*at(into) = v
		}}
}

// size is a number of bytes, written with a unit or as a plain integer, of at least lo.
func size[T any](key string, at func(*T) *int64, lo, def int64, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: formatSize(def), schema: sizeSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			s, ok := d.scalar(n, p, "a size such as `256Mi`", "!!str", "!!int")
			if !ok {
				return
			}
			v, err := parseSize(s)
			if err != nil {
				d.at(n, p, "%v", err)
				return
			}
			if v < lo {
				d.at(n, p, "must be at least %s", formatSize(lo))
				return
			}
			*at(into) = v
		}}
}

// cpu is an amount of CPU in cores or millicores, of at least 1m.
func cpu[T any](key string, at func(*T) *int64, def int64, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: fmt.Sprintf("%dm", def), schema: cpuSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			s, ok := d.scalar(n, p, "an amount of CPU such as `500m` or `1`", "!!str", "!!int", "!!float")
			if !ok {
				return
			}
			v, err := parseCPU(s)
			if err != nil {
				d.at(n, p, "%v", err)
				return
			}
			if v < 1 {
				d.at(n, p, "must be at least `1m`")
				return
			}
			*at(into) = v
		}}
}

// stringList is a list of strings; with nonEmpty, the list must hold at least one.
func stringList[T any](key string, at func(*T) *[]string, nonEmpty bool, doc string) field[T] {
	minItems := 0
	if nonEmpty {
		minItems = 1
	}
	return field[T]{key: key, doc: doc, schema: listSchema(stringSchema(""), minItems),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			items, ok := d.sequence(n, p)
			if !ok {
				return
			}
			if nonEmpty && len(items) == 0 {
				d.at(n, p, "must not be empty; leave %s out instead", code(key))
				return
			}
			// An item that failed stays as an empty placeholder, so that list[i] in a
			// message is the i-th item of the file; the formation is not returned anyway.
			list := make([]string, len(items))
			for i, item := range items {
				list[i], _ = d.str(item, p.index(i))
			}
			*at(into) = list
		}}
}

// env is a mapping of environment variable names to values. Values may be written as any
// scalar but an empty one (PORT: 8080, DEBUG: true, SINCE: 2024-01-02) and are kept as
// written: VERSION: 1.10 is "1.10".
func env[T any](key string, at func(*T) *map[string]string, doc string) field[T] {
	return field[T]{key: key, doc: doc, def: emptyMapping, schema: envSchema(),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			entries, ok := d.mapping(n, p)
			if !ok {
				return
			}
			vars := make(map[string]string, len(entries))
			for _, e := range entries {
				ep := p.key(e.name)
				if err := checkEnvName(e.name); err != nil {
					d.at(e.key, ep, "%v", err)
					continue
				}
				v, ok := d.scalar(e.value, ep, "a value such as `info` or `8080`", "!!str", "!!int", "!!float", "!!bool", "!!timestamp")
				if !ok {
					continue
				}
				if e.name == "BP_GO_TARGETS" {
					if err := CheckGoTargets(v); err != nil {
						d.at(e.value, ep, "%v", err)
						continue
					}
				}
				vars[e.name] = v
			}
			*at(into) = vars
		}}
}

// object is a nested mapping with its own fields.
func object[T, U any](key string, at func(*T) *U, fields []field[U], doc string) field[T] {
	return field[T]{key: key, doc: doc, def: emptyMapping, schema: objectSchema(fields),
		decode: func(d *decoder, n *yaml.Node, p path, into *T) {
			decodeObject(d, n, p, fields, at(into))
		}}
}

// codeList writes names for a message: `a`, `b`, `c`.
func codeList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = code(n)
	}
	return strings.Join(quoted, ", ")
}

// didYouMean is the hint for a name that is not among the known ones: ", did you mean
// `scale`?", or "" when none is close.
func didYouMean(s string, known []string) string {
	if c := closest(s, known); c != "" {
		return ", did you mean " + code(c) + "?"
	}
	return ""
}
