// Package build turns (a repository at a commit, a service) into an image reference pinned
// by digest: Cloud Native Buildpacks through pack's Go library, image services resolved to a
// digest, Dockerfile builds through the Docker engine. Work already done is found in the
// registry and skipped.
//
// It may import pack, go-containerregistry and the Docker client. It must not import Consul,
// sync or hostd: it knows nothing about where images run.
package build
