// Package registry is the OCI registry `gilliam-sync up` embeds: go-containerregistry's
// registry with its blobs on disk, and every manifest written or deleted journaled to disk
// and replayed at start, so a restart keeps every image (upstream keeps manifests in
// memory only). It serves plain HTTP, meant for 127.0.0.1, where the Docker engine and the
// buildpack lifecycle use it without configuration.
package registry
