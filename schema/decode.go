package schema

import (
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Parse parses and validates one gilliam.yml; filename is used in errors only. On invalid
// input the error is an ErrorList holding every problem, each with file, line, column and
// path, in a stable order; the Formation is then nil.
//
// Parsing goes in three steps: read the YAML document within the limits (document.go),
// decode it into the Go types following the tables of fields.go, checking each value's
// type and syntax and applying defaults (this file), then check the rules that relate
// values to one another (validate.go).
func Parse(filename string, data []byte) (*Formation, error) {
	r := newReport(filename)
	root := readDocument(r, data)
	if root == nil {
		return nil, r.result()
	}
	d := &decoder{report: r}
	f := d.formation(root)
	r.decodingDone()
	validate(f, r)
	if err := r.result(); err != nil {
		return nil, err
	}
	return f, nil
}

// ParseFile reads and parses the gilliam.yml at path. A file larger than MaxFileSize is
// refused unread. An error reading the file is returned as it is, not as an ErrorList.
func ParseFile(path string) (*Formation, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	// Read one byte more than the limit, so that Parse sees a file that is too large
	// without this reading all of it.
	data, err := io.ReadAll(io.LimitReader(file, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(path, data)
}

// A decoder turns the YAML nodes of a gilliam.yml into a Formation, reporting every value
// of the wrong type or syntax and recording where each value is written.
type decoder struct {
	*report
}

func (d *decoder) formation(root *yaml.Node) *Formation {
	f := &Formation{}
	decodeObject(d, root, "", formationFields, f)
	if f.Services == nil {
		f.Services = make(map[string]*Service)
	}
	for _, s := range f.Services {
		merged := make(map[string]string, len(f.Env)+len(s.Env))
		maps.Copy(merged, f.Env)
		maps.Copy(merged, s.Env)
		s.Env = merged
	}
	return f
}

// decodeObject decodes the mapping n into into, following fields: each known key is
// decoded, an unknown one is reported with the closest known key, a required one left out
// is reported, and every other one left out takes its default.
func decodeObject[T any](d *decoder, n *yaml.Node, p path, fields []field[T], into *T) {
	entries, isMapping := d.mapping(n, p)
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		ep := p.key(e.name)
		i := slices.IndexFunc(fields, func(f field[T]) bool { return f.key == e.name })
		if i < 0 {
			// The top level allows extension keys, a place to hold YAML anchors.
			if p == "" && strings.HasPrefix(e.name, "x-") {
				continue
			}
			d.at(e.key, ep, "unknown field%s", unknownHint(e.name, fields))
			continue
		}
		seen[e.name] = true
		// A scalar's errors point at the value, a mapping's or a list's at its key.
		if resolve(e.value).Kind == yaml.ScalarNode {
			d.record(ep, e.value)
		} else {
			d.record(ep, e.key)
		}
		fields[i].decode(d, e.value, ep, into)
	}
	for _, f := range fields {
		switch {
		case seen[f.key]:
		case f.required:
			if isMapping {
				d.at(n, p, "missing required field %s", code(f.key))
			}
		case f.def != nil:
			f.decode(d, defaultNode(f.def), p.key(f.key), into)
		}
	}
}

func unknownHint[T any](name string, fields []field[T]) string {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	if hint := didYouMean(name, keys); hint != "" {
		return hint
	}
	return " (known fields: " + strings.Join(keys, ", ") + ")"
}

// defaultNode is the YAML node a default would be if it were written.
func defaultNode(def any) *yaml.Node {
	switch v := def.(type) {
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
	case emptyMappingType:
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	panic(fmt.Sprintf("schema: default of unsupported type %T", def))
}

func (d *decoder) services(n *yaml.Node, p path) map[string]*Service {
	services := make(map[string]*Service)
	entries, _ := d.mapping(n, p)
	for _, e := range entries {
		sp := p.key(e.name)
		d.record(sp, e.key)
		if err := checkLabel(e.name); err != nil {
			d.at(e.key, sp, "a service name %v", err)
		}
		s := &Service{Name: e.name}
		decodeObject(d, e.value, sp, serviceFields, s)
		d.serviceDefaults(s, sp)
		services[e.name] = s
	}
	return services
}

// serviceDefaults applies the defaults that depend on other fields of the service.
func (d *decoder) serviceDefaults(s *Service, sp path) {
	if s.Type == "" {
		s.Type = TypeBuildpack
		if d.has(sp.key("image")) {
			s.Type = TypeImage
		}
	}
	if s.Type == TypeBuildpack && !d.has(sp.key("process")) && !d.has(sp.key("command")) {
		s.Process = DefaultProcess
	}
	if s.Check.Type == "" {
		// A check written without http or tcp is a TCP one; a check left out is one
		// only when there is a port to check.
		s.Check.Type = CheckTCP
		if !d.has(sp.key("check")) && len(s.Ports) == 0 {
			s.Check.Type = CheckNone
		}
	}
}

func (d *decoder) ports(n *yaml.Node, p path) []Port {
	items, _ := d.sequence(n, p)
	ports := make([]Port, 0, len(items))
	for i, item := range items {
		ip := p.index(i)
		var port Port
		switch v := resolve(item); {
		case v.Kind == yaml.MappingNode:
			decodeObject(d, item, ip, portFields, &port)
		case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!int":
			port.Port, _ = d.integer(item, ip, 1, 65535)
		case v.Kind == yaml.ScalarNode && decimal.MatchString(v.Value):
			d.at(item, ip, "must be a port number, not %s; remove the quotes", describe(v))
		default:
			d.at(item, ip, "must be a port number such as 8080 or a mapping such as {port: 8080, name: http}, not %s", describe(v))
		}
		// A port that failed stays as a zero placeholder, so that ports[i] in a message
		// is the i-th port of the file; the formation is not returned anyway.
		ports = append(ports, port)
	}
	return ports
}

func (d *decoder) check(n *yaml.Node, p path) Check {
	var c Check
	v := resolve(n)
	if v.Kind != yaml.ScalarNode {
		decodeObject(d, n, p, checkFields, &c)
		return c
	}
	decodeObject(d, defaultNode(emptyMapping), p, checkFields, &c)
	switch {
	case v.ShortTag() == "!!str" && v.Value == CheckNone:
		c.Type = CheckNone
	case v.ShortTag() == "!!str":
		d.at(n, p, "%s is not a check: write {http: /healthz}, {tcp: true} or `none`", code(v.Value))
	default:
		d.at(n, p, "must be a mapping such as {http: /healthz} or {tcp: true}, or `none`, not %s", describe(v))
	}
	return c
}

func (d *decoder) constraints(n *yaml.Node, p path) []Constraint {
	items, _ := d.sequence(n, p)
	constraints := make([]Constraint, 0, len(items))
	for i, item := range items {
		s, ok := d.str(item, p.index(i))
		if !ok {
			continue
		}
		c, err := parseConstraint(s)
		if err != nil {
			d.at(item, p.index(i), "%v", err)
			continue
		}
		constraints = append(constraints, c)
	}
	return constraints
}

// domains are host names of two labels or more, lowercase, each once, at most 253 characters.
func (d *decoder) domains(n *yaml.Node, p path) []string {
	items, _ := d.sequence(n, p)
	domains := make([]string, 0, len(items))
	seen := map[string]bool{}
	for i, item := range items {
		s, ok := d.str(item, p.index(i))
		switch {
		case !ok:
		case !domainRE.MatchString(s) || len(s) > 253:
			d.at(item, p.index(i), "%s is not a host name: lowercase labels of letters, digits and -, joined by dots, such as shop.example.com", code(s))
		case seen[s]:
			d.at(item, p.index(i), "%s is listed twice", code(s))
		default:
			seen[s] = true
			domains = append(domains, s)
		}
	}
	return domains
}

func (d *decoder) overrides(n *yaml.Node, p path) map[string]PreviewOverride {
	overrides := make(map[string]PreviewOverride)
	entries, _ := d.mapping(n, p)
	for _, e := range entries {
		op := p.key(e.name)
		d.record(op, e.key)
		var o PreviewOverride
		decodeObject(d, e.value, op, overrideFields, &o)
		overrides[e.name] = o
	}
	return overrides
}

// An entry is one key and its value in a mapping.
type entry struct {
	name       string
	key, value *yaml.Node
}

// mapping returns the entries of the mapping n, with YAML merge keys (<<: *base) resolved:
// keys written in the mapping win over merged ones, and earlier merged mappings over later
// ones. A key written twice is reported. It reports n when it is not a mapping.
func (d *decoder) mapping(n *yaml.Node, p path) ([]entry, bool) {
	v := resolve(n)
	if v.Kind != yaml.MappingNode {
		d.at(n, p, "must be a mapping, not %s", describe(v))
		d.wrongType[p] = true
		return nil, false
	}
	var entries, merged []entry
	written := make(map[string]*yaml.Node, len(v.Content)/2)
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		kv := resolve(k)
		switch {
		case kv.Kind != yaml.ScalarNode:
			d.at(k, p, "a key must be a plain string, not %s", describe(kv))
		case kv.ShortTag() == "!!merge":
			merged = append(merged, d.merged(val, p)...)
		case written[kv.Value] != nil:
			d.at(k, p.key(kv.Value), "is already set at line %d", written[kv.Value].Line)
		default:
			written[kv.Value] = k
			entries = append(entries, entry{kv.Value, k, val})
		}
	}
	for _, e := range merged {
		if written[e.name] == nil {
			written[e.name] = e.key
			entries = append(entries, e)
		}
	}
	return entries, true
}

// merged returns the entries a merge key brings in: those of a mapping or of a list of
// mappings.
func (d *decoder) merged(n *yaml.Node, p path) []entry {
	v := resolve(n)
	if v.Kind == yaml.MappingNode {
		entries, _ := d.mapping(n, p)
		return entries
	}
	if v.Kind != yaml.SequenceNode {
		d.at(n, p, "`<<` merges a mapping or a list of mappings, not %s", describe(v))
		return nil
	}
	var all []entry
	for _, item := range v.Content {
		if resolve(item).Kind != yaml.MappingNode {
			d.at(item, p, "`<<` merges a mapping or a list of mappings, not a list of %s", describe(resolve(item)))
			continue
		}
		entries, _ := d.mapping(item, p)
		all = append(all, entries...)
	}
	return all
}

// sequence returns the items of the list n, recording where each is written. It reports n
// when it is not a list.
func (d *decoder) sequence(n *yaml.Node, p path) ([]*yaml.Node, bool) {
	v := resolve(n)
	if v.Kind != yaml.SequenceNode {
		d.at(n, p, "must be a list, not %s", describe(v))
		d.wrongType[p] = true
		return nil, false
	}
	for i, item := range v.Content {
		d.record(p.index(i), item)
	}
	return v.Content, true
}

// scalar returns the text of n when it is a scalar of one of the YAML types tags, and
// reports it otherwise; want says what was expected.
func (d *decoder) scalar(n *yaml.Node, p path, want string, tags ...string) (string, bool) {
	v := resolve(n)
	if v.Kind == yaml.ScalarNode && slices.Contains(tags, v.ShortTag()) {
		return v.Value, true
	}
	hint := ""
	switch {
	case v.Kind != yaml.ScalarNode:
	case v.ShortTag() == "!!null" && tags[0] == "!!str":
		hint = `; write "" for an empty string`
	case v.ShortTag() == "!!null":
	case tags[0] == "!!str":
		hint = fmt.Sprintf("; write it in quotes: \"%s\"", truncate(v.Value))
	case tags[0] == "!!int" && v.ShortTag() == "!!str" && decimal.MatchString(v.Value):
		hint = "; remove the quotes"
	}
	d.at(n, p, "must be %s, not %s%s", want, describe(v), hint)
	return "", false
}

func (d *decoder) str(n *yaml.Node, p path) (string, bool) {
	return d.scalar(n, p, "a string", "!!str")
}

var decimal = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// integer decodes a decimal integer between lo and hi. Other ways YAML writes integers
// (0x1F, 0o17, 1_000, and 0755 as octal) are refused: in a port or a scale they are
// mistakes.
func (d *decoder) integer(n *yaml.Node, p path, lo, hi int) (int, bool) {
	s, ok := d.scalar(n, p, "an integer", "!!int")
	if !ok {
		return 0, false
	}
	if !decimal.MatchString(s) {
		d.at(n, p, "%s must be written as a plain decimal number", code(s))
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		d.at(n, p, "must be between %d and %d", lo, hi)
		return 0, false
	}
	return v, true
}

func (d *decoder) boolean(n *yaml.Node, p path) (bool, bool) {
	s, ok := d.scalar(n, p, "true or false", "!!bool")
	return strings.EqualFold(s, "true"), ok
}

// resolve follows aliases to the value they name. readDocument has made sure they lead
// somewhere and not in circles.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// describe names the YAML type of a value for messages: "a list", "an integer".
func describe(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch tag := v.ShortTag(); tag {
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "true or false"
	case "!!null":
		return "empty"
	case "!!timestamp":
		return "a date"
	case "!!merge":
		return "a merge key"
	case "!!binary":
		return "binary data"
	default:
		return "a value tagged " + code(tag)
	}
}
