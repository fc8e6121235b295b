// Package gitwatch follows git repositories: it lists remote refs cheaply, fetches into one
// bare on-disk cache per repository, receives signed webhooks, and turns ref movements
// (push, force-push, delete, pull-request refs) into events. It also answers what changed
// between two commits, per service path, by tree hash.
//
// It talks to git servers through go-git only. It must not import Docker, Consul, pack or
// any other package of this module except schema.
package gitwatch
