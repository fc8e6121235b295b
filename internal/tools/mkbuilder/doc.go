// Command mkbuilder assembles the offline buildpack builder described in build/builder into
// the local Docker engine: the busybox stack image (tagged as the build image and as the run
// image), then the builder, created with pack's Go library from the project's Go and
// Procfile buildpacks and the lifecycle tarball `make tools` built.
//
// It checks before it builds: every image carries a label with the hash of its inputs, and
// an image whose label matches is kept as it is. A deleted image, or a changed buildpack, is
// rebuilt. `make tools` runs it; see build/builder/README.md.
package main
