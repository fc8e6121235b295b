package sync

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	stdsync "sync"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Config vars are secrets: Consul holds them sealed (docs/security.md). The leader holds
// the root key: it opens the formation's config vars to derive releases (whose IDs use a
// keyed digest of them, never their values), keeps each release's vars sealed to the root
// key (secrets/<f>/<release>), and seals them again to the key of every host the release
// is placed on (hosts/<h>/sealed/<release>), in the transaction that assigns it there.

// keyring is the leader's keys: the root key (from the daemon's configuration) and the
// release-ID key, which lives in Consul sealed to the root key.
type keyring struct {
	// reload reads the root key again (nil: it cannot be): after a rotation, Consul names
	// a new root key and the daemon's key file holds it.
	reload func() (*seal.Key, error)

	mu        stdsync.Mutex
	root      *seal.Key
	releaseID []byte
	opened    map[string]openedConfig // formation -> its config, opened, at a ModifyIndex
}

type openedConfig struct {
	index uint64
	vars  map[string]string
	err   error
}

func newKeyring(root *seal.Key, reload func() (*seal.Key, error)) *keyring {
	return &keyring{root: root, reload: reload, opened: map[string]openedConfig{}}
}

// rootKey is the root key now.
func (k *keyring) rootKey() *seal.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.root
}

// matches says whether the root key Consul names is this daemon's, reading the key again
// once when it is not (a rotation replaced it). No root key in Consul matches.
func (k *keyring) matches(rk *state.RootKey) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rk == nil || k.root == nil || rk.Fingerprint == k.root.Public().Fingerprint() {
		return true
	}
	if k.reload == nil {
		return false
	}
	if nk, err := k.reload(); err == nil && nk.Public().Fingerprint() == rk.Fingerprint {
		k.root, k.opened = nk, map[string]openedConfig{}
		return true
	}
	return false
}

// ErrNotRootKey is returned when the installation's root key in Consul is not this
// daemon's: it cannot open config vars, so it must not lead.
var ErrNotRootKey = errors.New("this daemon's root key is not the installation's")

// ensure publishes the root public key and a new release-ID key when the installation has
// none, checks that the one in Consul is this daemon's, and opens the release-ID key.
// With publish false (a plan), nothing is written: an installation with no root key yet
// has no config vars to open.
func (k *keyring) ensure(ctx context.Context, store *state.Store, now time.Time, publish bool) error {
	root := k.rootKey()
	if root == nil {
		return nil
	}
	for {
		rk, _, err := store.RootKey(ctx)
		if err != nil {
			return err
		}
		if rk == nil && !publish {
			return nil
		}
		if rk != nil {
			if !k.matches(rk) {
				return fmt.Errorf("%w: Consul names root key %s, this daemon has %s (give it the installation's key with --key-file or GILLIAM_SYNC_KEY)",
					ErrNotRootKey, rk.Fingerprint, root.Public().Fingerprint())
			}
			sealed, err := store.ReleaseIDKey(ctx)
			if err != nil {
				return err
			}
			id, err := k.rootKey().Open(sealed)
			if err != nil {
				return fmt.Errorf("release-ID key: %w", err)
			}
			k.mu.Lock()
			k.releaseID = id
			k.mu.Unlock()
			return nil
		}
		id := make([]byte, 32)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		sealed, err := seal.Seal(root.Public(), id)
		if err != nil {
			return err
		}
		pub := root.Public()
		err = store.PutRootKey(ctx, &state.RootKey{Public: pub.String(), Fingerprint: pub.Fingerprint(), Updated: now.UTC()}, 0, sealed)
		if err != nil && !errors.Is(err, state.ErrConflict) {
			return fmt.Errorf("publish the root key: %w", err)
		}
		// Published, or another daemon published first: read it back.
	}
}

// releaseIDKey is the key release IDs are hashed with (nil before ensure).
func (k *keyring) releaseIDKey() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.releaseID
}

// open opens every formation's config vars, keeping what it opened per ModifyIndex.
func (k *keyring) open(kv *state.Snapshot) (map[string]map[string]string, map[string]error) {
	vars, errs := map[string]map[string]string{}, map[string]error{}
	k.mu.Lock()
	defer k.mu.Unlock()
	for f, sealed := range kv.Config {
		index := kv.ConfigIndex(f)
		o, ok := k.opened[f]
		if !ok || o.index != index {
			o = openedConfig{index: index}
			o.vars, o.err = openConfig(k.root, f, sealed)
			k.opened[f] = o
		}
		if o.err != nil {
			errs[f] = o.err
		} else if len(o.vars) > 0 {
			vars[f] = o.vars
		}
	}
	for f := range k.opened {
		if _, ok := kv.Config[f]; !ok {
			delete(k.opened, f)
		}
	}
	return vars, errs
}

// openConfig opens a formation's config vars, each sealed to the root key.
func openConfig(root *seal.Key, formation string, sealed map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(sealed))
	names := make([]string, 0, len(sealed))
	for name := range sealed {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if root == nil {
			return nil, fault.Stall(fmt.Errorf("config var %s of formation %s: this daemon has no root key to open it", name, formation))
		}
		v, err := root.Open(sealed[name])
		if err != nil {
			return nil, fault.Stall(fmt.Errorf("config var %s of formation %s: %v; set it again with `gilliam-sync env set %s %s -`", name, formation, err, formation, name))
		}
		out[name] = string(v)
	}
	return out, nil
}

// SealFor is one release's config vars to seal to one host.
type SealFor struct {
	Host, Formation, Release string
	Secret                   string // the release's vars sealed to the root key
	To                       string // the host's public key
	Recipient                string // its fingerprint
}

// Seal writes releases' config vars sealed to the hosts that run them, and deletes the
// copies of hosts that no longer do.
type Seal struct {
	Put  []SealFor
	Drop []SealFor // Host and Release only
}

func (a Seal) String() string {
	return fmt.Sprintf("seal config vars: %d written, %d removed", len(a.Put), len(a.Drop))
}

// sealsFor lists what assignments need sealed and the world does not hold: a release with
// config vars on a host whose copy is missing or sealed to a key the host no longer has.
// A host that published no key yet gets none (its host daemon waits for its copy).
func sealsFor(w *World, assignments map[string]*state.Assignment) []SealFor {
	var out []SealFor
	hosts := make([]string, 0, len(assignments))
	for h := range assignments {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		hk := w.KV.HostKeys[h]
		if hk == nil {
			continue
		}
		seen := map[string]bool{}
		for _, inst := range runsOn(assignments[h]) {
			rel := w.KV.Releases[inst.Formation][inst.Release]
			if seen[inst.Release] || rel == nil || rel.ConfigDigest == "" {
				continue
			}
			seen[inst.Release] = true
			if e := w.KV.Sealed[h][inst.Release]; e != nil && e.Recipient == hk.Fingerprint {
				continue
			}
			secret := w.KV.Secrets[inst.Formation][inst.Release]
			if secret == "" {
				continue
			}
			out = append(out, SealFor{Host: h, Formation: inst.Formation, Release: inst.Release, Secret: secret, To: hk.Public, Recipient: hk.Fingerprint})
		}
	}
	return out
}

// decideSeals repairs and cleans the hosts' sealed copies: missing ones (a host's key
// changed, a write lost) are written, those of releases a host no longer runs removed.
func decideSeals(in Input, d *Decision) {
	w := in.World
	a := Seal{Put: sealsFor(w, w.KV.Assignments)}
	hosts := make([]string, 0, len(w.KV.Sealed))
	for h := range w.KV.Sealed {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		var runs []string
		if as := w.KV.Assignments[h]; as != nil {
			for _, inst := range runsOn(as) {
				runs = append(runs, inst.Release)
			}
		}
		releases := make([]string, 0, len(w.KV.Sealed[h]))
		for r := range w.KV.Sealed[h] {
			releases = append(releases, r)
		}
		sort.Strings(releases)
		for _, r := range releases {
			if !slices.Contains(runs, r) {
				a.Drop = append(a.Drop, SealFor{Host: h, Release: r})
			}
		}
	}
	if len(a.Put) > 0 || len(a.Drop) > 0 {
		d.add(a)
	}
}

// sealTo adds to b the sealed copies of puts, each opened with the root key and sealed to
// its host's key. One that cannot be made is left out and said (its host waits for it),
// never holding up the rest of b: assignments go with it.
func sealTo(b *state.Batch, root *seal.Key, puts []SealFor) (problems []string) {
	for _, p := range puts {
		if err := sealOne(b, root, p); err != nil {
			problems = append(problems, fmt.Sprintf("release %s of %s for host %s: %v", p.Release, p.Formation, p.Host, err))
		}
	}
	return problems
}

func sealOne(b *state.Batch, root *seal.Key, p SealFor) error {
	if root == nil {
		return errors.New("no root key")
	}
	vars, err := root.OpenEnv(p.Secret)
	if err != nil {
		return err
	}
	to, err := seal.ParsePublic(p.To)
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	box, err := seal.SealEnv(to, vars)
	if err != nil {
		return err
	}
	b.PutSealed(p.Host, &state.SealedEnv{Release: p.Release, Recipient: p.Recipient, Box: box})
	return nil
}
