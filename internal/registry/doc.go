// Package registry is the OCI registry `gilliam-sync up` embeds: go-containerregistry's
// registry with its blobs on disk, and every manifest written or deleted journaled to disk
// and replayed at start, so a restart keeps every image (upstream keeps manifests in
// memory only). It serves plain HTTP, meant for 127.0.0.1, where the Docker engine and the
// buildpack lifecycle use it without configuration.
//
// It asks who you are (auth.go): a push credential may push, delete and collect garbage; a
// pull credential may only read; anyone else gets 401 with a Basic challenge. Repository
// names are checked against the distribution grammar before any path is made of them.
//
// It imports go-containerregistry's registry and the standard library only.
package registry
