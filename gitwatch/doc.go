// Package gitwatch follows git repositories for the sync loop: it lists remote refs cheaply,
// fetches what moved into one bare on-disk cache per repository, receives signed webhooks,
// and turns ref movements into events (push, force-push, delete, and pr-opened, pr-updated,
// pr-closed for previews). It also answers what changed between two commits, per service
// folder, by tree hash.
//
// Where to read: config.go is the watch list (RepoConfig, Validate); watch.go is one poll
// (Watcher.Poll: list, compare, fetch, name the moves) and the preview policy
// (PreviewAllowed); run.go is the loop around it (jitter, backoff, Trigger); webhook.go is
// the receiver's handler and server.go its listener (timeouts, caps, TLS); repo.go is the
// cache (reads, fetch, corruption check and re-clone); checkout.go writes a commit's
// folder for a build, treating the tree as hostile; packguard.go refuses fetched objects
// over the size limit before go-git reads them whole; auth.go builds credentials;
// errors.go says which failures need a person (StalledError, TreeError), which are the
// cache's (ErrCacheUnreadable), and keeps credentials out of error texts.
//
// It talks to git servers through go-git only, and must not import Docker, Consul, pack or
// any other package of this module except schema. docs/gitwatch.md is the user's guide.
package gitwatch
