// Package schema is the gilliam.yml format: its Go types, strict parsing, defaults and
// validation with file:line:column errors, and the JSON Schema generated from the types.
//
// It is pure: bytes in, a validated Formation or a list of positioned errors out. It must
// import nothing but the standard library and the YAML parser; never Docker, Consul, go-git
// or pack (make check enforces this).
package schema
