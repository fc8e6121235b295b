// Package e2e holds the end-to-end tests: the gilliam-sync binary, built from this
// repository, run against a real Consul agent, OCI registry, git server and Docker engine,
// driven the way a person would drive it (git push, the CLI). It has no code of its own.
package e2e
