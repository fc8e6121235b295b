package sync

import (
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/schema"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// World is what the leader decides from, as one value read at one moment: Consul's
// documents, the hosts and the health of instances, and the repositories' refs with the
// gilliam.yml each target holds. The observer makes a new one for every decision; nothing
// in it changes after.
type World struct {
	KV    *state.Snapshot
	Hosts []state.Host
	// PassingSince holds, for every instance whose check passes, since when it has been
	// passing without a break as far as this daemon saw; HostFailingSince, for every host
	// whose liveness check fails, since when.
	PassingSince     map[string]time.Time
	HostFailingSince map[string]time.Time
	// NodeDown are the hosts whose Consul node gossip finds failed: the machine or its
	// network is gone, so they are dead at once, with no dead_after grace.
	NodeDown map[string]bool
	// Registrations are the catalog's instance registrations that have a check, by
	// registration ID (instance@host).
	Registrations map[string]state.InstanceCheck
	Repos         []RepoView
	Now           time.Time
	// Config are the formations' config vars, opened with the root key (KV holds them
	// sealed); ConfigErr the formations whose vars do not open. ReleaseIDKey is the key
	// of the digest release IDs hold instead of the vars' values.
	Config       map[string]map[string]string
	ConfigErr    map[string]error
	ReleaseIDKey []byte
}

// RepoView is one repository as the observer last saw it.
type RepoView struct {
	Key string // folder-safe name: its observed record and its cache
	URL string // sanitized, for messages
	// Listed is true once a ref listing has succeeded since this daemon started: only
	// then may a missing ref tear a preview down.
	Listed  bool
	Targets []Target
	// Refs are the refs the watcher follows now, with their commits.
	Refs map[string]string
}

// Target is one thing to deploy: a commit of a watched ref, read from one gilliam.yml,
// as a formation or as the preview of a pull request or branch.
type Target struct {
	Repo    string // RepoView.Key
	RepoURL string
	Ref     string
	File    string
	Commit  string
	Kind    gitwatch.RefKind
	PR      int
	Source  *Source
	// Denied says why the watch list's preview policy refuses this preview (a pull
	// request from a fork, say); empty when it may deploy.
	Denied string
}

// Key names the target in the repository's observed record.
func (t Target) Key() string { return t.Ref + " " + t.File }

// ID names the target across repositories: in-flight work, retries.
func (t Target) ID() string { return t.Repo + " " + t.Key() }

func (t Target) preview() bool {
	return t.Kind == gitwatch.RefPullRequest || t.Kind == gitwatch.RefBranchPreview
}

// Source is a gilliam.yml at a commit: parsed, with the tree hash of each built service's
// path (what decides whether it needs a build), or why it could not be had.
type Source struct {
	Formation *schema.Formation
	Trees     map[string]string
	Err       error
	// Detected is when the observer first read this file at this commit: the deploy
	// timeline's first step.
	Detected time.Time
}
