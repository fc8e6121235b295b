// Package forge tells people on their forge what the control plane did with their code:
// commit statuses (pending, success, failure, one context per formation) and one comment
// per pull request listing its preview's services, on GitHub, GitLab and Gitea.
//
// Where to read: client.go is the common HTTP client (authentication, JSON, rate limits,
// errors that say whether to retry); github.go, gitlab.go and gitea.go are the three APIs
// behind the Client interface; notifier.go delivers what the control plane wants said, out
// of band: deduplicated, retried with internal/fault's backoff, paused while a forge's rate
// limit is spent, failures logged once, never holding anything up.
//
// It knows nothing of Consul, Docker, git or the control plane's state: it must import only
// the standard library and internal/fault. The sync package decides what to say
// (sync/notify.go); docs/observability.md is the user's guide.
package forge
