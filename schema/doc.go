// Package schema is the gilliam.yml format: its Go types, strict parsing, defaults and
// validation with file:line:column errors, and the JSON Schema generated from the types.
//
// It is pure: bytes in, a validated Formation or a list of positioned errors out. It must
// import nothing but the standard library and the YAML parser; never Docker, Consul, go-git
// or pack (make check enforces this).
//
// Parse is the entry point; an error it returns is an ErrorList, every problem of the file
// at once, and means a person must change the file. Read the package in this order:
//
//   - types.go: the Formation and its parts, the defaults and the limits.
//   - fields.go: the format key by key, one table per mapping, with each key's
//     documentation. The decoder, the JSON Schema and docs/gilliam-yml.md follow it.
//   - kinds.go: the kinds of values the tables are made of (a duration, a size, a list of
//     strings, ...), each pairing a decoder with its JSON Schema.
//   - document.go: reading the YAML within bounds (size, aliases, depth), since a
//     gilliam.yml may come from anyone who can open a pull request.
//   - decode.go: Parse, and the walk of the YAML nodes that checks types and applies
//     defaults, recording where each value is written.
//   - validate.go: the rules that relate values to one another (a check needs a port,
//     depends_on has no cycle, ...).
//   - values.go: the syntax of single values: names, durations, sizes, CPU, paths,
//     images, constraints.
//   - errors.go: Error, ErrorList and the positions they carry; suggest.go: "did you
//     mean"; names.go: DefaultName; jsonschema.go: JSONSchema.
package schema
