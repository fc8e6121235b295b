// Package testenv gives tests the real parts the project runs against, each on 127.0.0.1 and
// a random free port and cleaned up with t.Cleanup: a Consul agent in dev mode, an OCI
// registry, a git server over smart HTTP, and the Docker engine with a tiny test image.
//
// The Consul binary and the buildpack builder come from `make tools`; when one is missing the
// test fails and says so (it never skips). Only tests import this package.
package testenv
