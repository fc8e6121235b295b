// Package dockerbuild builds a folder holding a Dockerfile into an image with the Docker
// engine's API (classic builder, base images never re-pulled), for the stack images of the
// offline builder, `dockerfile` services and the test image. It imports only the Docker
// client types.
package dockerbuild
