// Package build turns (a service of a repository at a commit) into an image reference
// pinned by digest. Builder.Build is the entry point, one Builder per daemon:
//
//   - buildpack services build with Cloud Native Buildpacks through pack's Go library
//     (Buildpacks, buildpack.go), publishing straight to the registry;
//   - dockerfile services build with the Docker engine's API and are pushed (dockerfile.go);
//   - image services are resolved to the digest their tag points at (registry.go).
//
// Work done is not done again: an image is tagged in the registry with SourceTag (tree
// hash, builder, build env), and looked up there before any build, so the registry is the
// memory and it survives restarts. Builds wait in a queue (queue.go): a few at once, one at a
// time per service, only the newest of a burst of commits built. Each build's log is kept
// under the data dir and streamed to the daemon's log (logs.go). GC removes what builds left
// behind that nothing uses any more, given the live services and images (gc.go).
// errors.go says what Build's errors mean: stalled, superseded or retry. docs/build.md is
// the operator's guide.
//
// It may import pack, go-containerregistry and the Docker client. It must not import Consul,
// sync, hostd or gitwatch: it knows nothing about where images run.
package build
