// Package importrules holds the test that enforces the import rules of DESIGN.md: which
// packages of this module may depend on Docker, Consul, go-git, pack and each other.
// `make check` runs it. It has no code of its own.
package importrules
