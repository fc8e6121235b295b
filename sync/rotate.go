package sync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Rotated says what a root key rotation sealed again.
type Rotated struct {
	From, To  string // fingerprints
	Vars      int    // formations' config vars
	Releases  int    // releases' sealed config vars
	Formation int    // formations with config vars
}

// RotateRootKey seals everything the root key holds (the formations' config vars, every
// release's, and the release-ID key) to next instead of old, and publishes next's public
// half, in one check-and-set transaction: a config var set meanwhile makes it fail
// (ErrConflict), and nothing is half rotated. Release IDs do not change (their key is kept),
// so nothing restarts; hosts' copies are sealed to the hosts' own keys and stay valid.
func RotateRootKey(ctx context.Context, store *state.Store, old, next *seal.Key, now time.Time) (Rotated, error) {
	r := Rotated{From: old.Public().Fingerprint(), To: next.Public().Fingerprint()}
	snap, err := store.Snapshot(ctx, 0, 0)
	if err != nil {
		return r, err
	}
	if snap.RootKey == nil {
		return r, errors.New("the installation has no root key yet: a sync daemon publishes it when it first leads")
	}
	if snap.RootKey.Fingerprint != r.From {
		return r, fmt.Errorf("%w: Consul names root key %s, the key given is %s", ErrNotRootKey, snap.RootKey.Fingerprint, r.From)
	}
	b := store.NewBatch()
	pub := next.Public()
	b.PutRootKeyCAS(&state.RootKey{Public: pub.String(), Fingerprint: pub.Fingerprint(), Updated: now.UTC()}, snap.RootKeyIndex())
	resealed, err := reseal(old, next, snap.ReleaseIDKey)
	if err != nil {
		return r, fmt.Errorf("release-ID key: %w", err)
	}
	b.PutReleaseIDKey(resealed)
	for _, f := range sortedFormations(snap.Config) {
		c := map[string]string{}
		for name, v := range snap.Config[f] {
			if c[name], err = reseal(old, next, v); err != nil {
				return r, fmt.Errorf("config var %s of %s: %w", name, f, err)
			}
			r.Vars++
		}
		b.PutConfigRaw(f, c, snap.ConfigIndex(f))
		r.Formation++
	}
	for _, f := range sortedFormations(snap.Secrets) {
		for id, v := range snap.Secrets[f] {
			s, err := reseal(old, next, v)
			if err != nil {
				return r, fmt.Errorf("config vars of release %s of %s: %w", id, f, err)
			}
			b.PutSecret(f, id, s)
			r.Releases++
		}
	}
	return r, store.Apply(ctx, b)
}

func reseal(old, next *seal.Key, sealed string) (string, error) {
	plain, err := old.Open(sealed)
	if err != nil {
		return "", err
	}
	return seal.Seal(next.Public(), plain)
}

func sortedFormations[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for f := range m {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}
