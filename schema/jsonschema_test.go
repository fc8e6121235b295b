package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The JSON Schema is checked in as schema/gilliam.schema.json, for editors to point at;
// it must be what JSONSchema generates.
func TestJSONSchemaFile(t *testing.T) {
	got := JSONSchema()
	if *update {
		if err := os.WriteFile("gilliam.schema.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("gilliam.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("schema/gilliam.schema.json is not what JSONSchema() generates: run go test ./schema -update and review the diff")
	}
}

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(JSONSchema(), &s); err != nil {
		t.Fatalf("JSONSchema() is not JSON: %v", err)
	}
	if s["$schema"] != "http://json-schema.org/draft-07/schema#" {
		t.Errorf("$schema = %v", s["$schema"])
	}
	return s
}

// yamlValue decodes a YAML document into plain values, as a JSON Schema tool sees it.
func yamlValue(t *testing.T, src string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return v
}

// Every valid example, and everything the rules allow, validates against the schema.
func TestSchemaAcceptsWhatParseAccepts(t *testing.T) {
	s := loadSchema(t)
	files := append(validExamples(t), "schema/testdata/full.yml")
	docs := map[string]string{}
	for _, file := range files {
		data, err := os.ReadFile(filepath.Join(repoRoot, file))
		if err != nil {
			t.Fatal(err)
		}
		docs[file] = string(data)
	}
	for name, src := range allowed {
		docs[name] = src
	}
	for name, src := range docs {
		if _, err := Parse(name, []byte(src)); err != nil {
			t.Fatalf("%s does not parse: %v", name, err)
		}
		if problems := validateJSON(yamlValue(t, src), s, ""); len(problems) > 0 {
			t.Errorf("%s: the schema refuses what gilliam-sync accepts:\n%s", name, strings.Join(problems, "\n"))
		}
	}
}

// What the schema can say (types, keys, patterns, ranges), it refuses as the decoder does.
func TestSchemaRefusesWhatParseRefuses(t *testing.T) {
	s := loadSchema(t)
	for _, src := range []string{
		"services:\n  web:\n    path: .\n    scael: 2\n",
		"services:\n  web:\n    path: 12\n",
		"services:\n  web:\n    path: .\n    scale: -1\n",
		"services:\n  web:\n    path: .\n    scale: \"2\"\n",
		"services:\n  Web:\n    path: .\n",
		"services:\n  web:\n    path: .\n    env: {MY-VAR: 1}\n",
		"services:\n  web:\n    path: .\n    ports: [70000]\n",
		"services:\n  web:\n    path: .\n    ports: [{name: http}]\n",
		"services:\n  web:\n    path: .\n    check: {interval: 10}\n",
		"services:\n  web:\n    path: .\n    check: {http: healthz}\n",
		"services:\n  web:\n    path: .\n    check: off\n",
		"services:\n  web:\n    path: .\n    resources: {memory: 1GB}\n",
		"services:\n  web:\n    path: .\n    resources: {cpu: 2 cores}\n",
		"services:\n  web:\n    path: .\n    constraints: [zone]\n",
		"services:\n  web:\n    type: lambda\n",
		"services:\n  db:\n    image: Redis\n",
		"services:\n  web:\n    path: .\n    command: []\n",
		"services: {}\n",
		"formation: Shop\nservices:\n  web:\n    path: .\n",
		"previews: {enabled: yes}\nservices:\n  web:\n    path: .\n",
		"services:\n  web:\n    path: .\nextra: 1\n",
	} {
		if _, err := Parse("gilliam.yml", []byte(src)); err == nil {
			t.Fatalf("Parse accepts:\n%s", src)
		}
		if problems := validateJSON(yamlValue(t, src), s, ""); len(problems) == 0 {
			t.Errorf("the schema accepts what gilliam-sync refuses:\n%s", src)
		}
	}
}

// The drift test: for every key of the format, at every level, a value of each YAML type
// is put in a valid document; the decoder must call the type wrong exactly when the
// schema does. A field whose decoder and schema disagree on the types it takes fails.
func TestSchemaAndDecoderAgreeOnTypes(t *testing.T) {
	s := loadSchema(t)
	probes := map[string]any{"a string": "probe", "an integer": 7, "a number": 7.5, "true or false": true,
		"empty": nil, "a list": []any{}, "a mapping": map[string]any{}}
	typeError := regexp.MustCompile(`, not (a string|an integer|a number|true or false|empty|a list|a mapping)\b|needs a unit`)

	fields := schemaFields(s, nil)
	if len(fields) < 40 {
		t.Fatalf("found %d fields in the schema; the walk is broken", len(fields))
	}
	for _, f := range fields {
		for kind, probe := range probes {
			doc := map[string]any{"services": map[string]any{"web": map[string]any{"path": ".", "ports": []any{8080}}}}
			set(doc, f.at, probe)
			src, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := Parse("gilliam.yml", src)
			decoderRefuses := false
			if list, ok := perr.(ErrorList); ok {
				for _, e := range list {
					decoderRefuses = decoderRefuses || e.Path == f.path && typeError.MatchString(e.Msg)
				}
			}
			schemaRefuses := !typeAccepts(f.schema, probe)
			if decoderRefuses != schemaRefuses {
				t.Errorf("%s given %s: decoder refuses the type: %v, schema refuses it: %v\n%s%v", f.path, kind, decoderRefuses, schemaRefuses, src, perr)
			}
		}
	}
}

// A schemaField is a place in a document the schema describes: a key, an item, a value
// of a mapping of names.
type schemaField struct {
	path   string // as errors write it
	at     []any  // the keys (string) and indexes (int) that lead to it
	schema map[string]any
}

// schemaFields lists every place below s, with sample names for mappings of names.
func schemaFields(s map[string]any, at []any) []schemaField {
	var out []schemaField
	add := func(next any, sub map[string]any) {
		p := slices.Concat(at, []any{next})
		out = append(out, schemaField{pathOf(p), p, sub})
		out = append(out, schemaFields(sub, p)...)
	}
	props, _ := s["properties"].(map[string]any)
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, props[k].(map[string]any))
	}
	if sub, ok := s["additionalProperties"].(map[string]any); ok {
		name := "web"
		if strings.Contains(fmt.Sprint(s["propertyNames"]), "A-Z") {
			name = "PROBE"
		}
		add(name, sub)
	}
	if sub, ok := s["items"].(map[string]any); ok {
		add(0, sub)
	}
	for _, branch := range asList(s["anyOf"]) {
		out = append(out, schemaFields(branch.(map[string]any), at)...)
	}
	return out
}

func pathOf(at []any) string {
	var p path
	for _, a := range at {
		switch a := a.(type) {
		case string:
			p = p.key(a)
		case int:
			p = p.index(a)
		}
	}
	return string(p)
}

// set puts v at the place at in doc, making the mappings and lists on the way.
func set(doc map[string]any, at []any, v any) {
	var cur any = doc
	for i, a := range at {
		last := i == len(at)-1
		next := func(existing any) any {
			if last {
				return v
			}
			if _, isIndex := at[i+1].(int); isIndex {
				if l, ok := existing.([]any); ok && len(l) > 0 {
					return l
				}
				return []any{nil}
			}
			if m, ok := existing.(map[string]any); ok {
				return m
			}
			return map[string]any{}
		}
		switch c := cur.(type) {
		case map[string]any:
			c[a.(string)] = next(c[a.(string)])
			cur = c[a.(string)]
		case []any:
			c[a.(int)] = next(c[a.(int)])
			cur = c[a.(int)]
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// jsonType names the JSON Schema type of a plain value.
func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case int, int64:
		return "integer"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// typeAccepts reports whether s's "type" keyword (through anyOf) admits v.
func typeAccepts(s map[string]any, v any) bool {
	if branches := asList(s["anyOf"]); branches != nil {
		return slices.ContainsFunc(branches, func(b any) bool { return typeAccepts(b.(map[string]any), v) })
	}
	var types []string
	switch t := s["type"].(type) {
	case nil:
		return true
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, x.(string))
		}
	}
	jt := jsonType(v)
	return slices.Contains(types, jt) || jt == "integer" && slices.Contains(types, "number")
}

// The keywords validateJSON knows. The schema may use no other: a keyword this validator
// skipped would make the tests above pass for the wrong reason.
var knownKeywords = []string{"$schema", "title", "description", "default", "type", "enum", "pattern",
	"minimum", "maximum", "minItems", "items", "minProperties", "properties", "patternProperties",
	"propertyNames", "additionalProperties", "required", "anyOf"}

func TestSchemaUsesKnownKeywords(t *testing.T) {
	var walk func(s map[string]any, at string)
	walk = func(s map[string]any, at string) {
		for k, v := range s {
			if !slices.Contains(knownKeywords, k) {
				t.Errorf("%s: keyword %q unknown to the test validator", at, k)
			}
			switch k {
			case "properties", "patternProperties":
				for name, sub := range v.(map[string]any) {
					walk(sub.(map[string]any), at+"/"+name)
				}
			case "items", "propertyNames", "additionalProperties":
				if sub, ok := v.(map[string]any); ok {
					walk(sub, at+"/"+k)
				}
			case "anyOf":
				for _, sub := range asList(v) {
					walk(sub.(map[string]any), at+"/anyOf")
				}
			}
		}
	}
	walk(loadSchema(t), "#")
}

// validateJSON is a small JSON Schema validator for the keywords above: enough to check
// documents against our own schema without a dependency.
func validateJSON(v any, s map[string]any, at string) []string {
	var problems []string
	fail := func(format string, args ...any) {
		problems = append(problems, at+": "+fmt.Sprintf(format, args...))
	}
	if branches := asList(s["anyOf"]); branches != nil {
		if !slices.ContainsFunc(branches, func(b any) bool { return len(validateJSON(v, b.(map[string]any), at)) == 0 }) {
			fail("matches no branch of anyOf")
		}
	}
	if !typeAccepts(map[string]any{"type": s["type"]}, v) {
		fail("%s is not of type %v", jsonType(v), s["type"])
		return problems
	}
	if enum := asList(s["enum"]); enum != nil && !slices.Contains(enum, v) {
		fail("%v is not in %v", v, enum)
	}
	switch v := v.(type) {
	case string:
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			fail("%q does not match %s", v, p)
		}
	case int, float64:
		n := fmt.Sprint(v)
		var f float64
		fmt.Sscan(n, &f)
		if lo, ok := s["minimum"].(float64); ok && f < lo {
			fail("%v < %v", v, lo)
		}
		if hi, ok := s["maximum"].(float64); ok && f > hi {
			fail("%v > %v", v, hi)
		}
	case []any:
		if n, ok := s["minItems"].(float64); ok && float64(len(v)) < n {
			fail("fewer than %v items", n)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, item := range v {
				problems = append(problems, validateJSON(item, items, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	case map[string]any:
		if n, ok := s["minProperties"].(float64); ok && float64(len(v)) < n {
			fail("fewer than %v properties", n)
		}
		for _, r := range asList(s["required"]) {
			if _, ok := v[r.(string)]; !ok {
				fail("missing %s", r)
			}
		}
		props, _ := s["properties"].(map[string]any)
		patterns, _ := s["patternProperties"].(map[string]any)
		for k, val := range v {
			if names, ok := s["propertyNames"].(map[string]any); ok {
				problems = append(problems, validateJSON(k, names, at+"/"+k+" (name)")...)
			}
			matched := false
			if sub, ok := props[k]; ok {
				matched = true
				problems = append(problems, validateJSON(val, sub.(map[string]any), at+"/"+k)...)
			}
			for p, sub := range patterns {
				if regexp.MustCompile(p).MatchString(k) {
					matched = true
					problems = append(problems, validateJSON(val, sub.(map[string]any), at+"/"+k)...)
				}
			}
			if matched {
				continue
			}
			switch extra := s["additionalProperties"].(type) {
			case bool:
				if !extra {
					fail("unknown property %q", k)
				}
			case map[string]any:
				problems = append(problems, validateJSON(val, extra, at+"/"+k)...)
			}
		}
	}
	return problems
}
