package sync_test

import (
	"context"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// rootKey is the root key of every syncer of these tests: daemons of one installation share it.
var rootKey = func() *seal.Key {
	k, err := seal.Generate()
	if err != nil {
		panic(err)
	}
	return k
}()

// trustHost publishes the key record of a host registered by hand (no host daemon).
func trustHost(t *testing.T, store *state.Store, host string) *seal.Key {
	t.Helper()
	k, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.TrustHost(context.Background(), host, k.Public().String(), k.Public().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	return k
}

// setConfig sets a formation's config var as `gilliam-sync env set` does: sealed to the
// root key.
func setConfig(t *testing.T, store *state.Store, formation, name, value string) {
	t.Helper()
	sealed, err := seal.Seal(rootKey.Public(), []byte(value))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.UpdateConfig(context.Background(), formation, func(c map[string]string) { c[name] = sealed }); err != nil {
		t.Fatal(err)
	}
}
