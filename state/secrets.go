package state

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// Config vars never reach Consul in clear (see internal/seal and docs/security.md):
//
//	keys/root                   the installation's root public key (RootKey)
//	keys/release-id             the key release IDs are hashed with, sealed to the root key
//	formations/<f>/config       each config var's value sealed to the root key
//	secrets/<f>/<release>       a release's config vars, one box sealed to the root key
//	hosts/<h>/key               the host's public key and Consul node (HostKey)
//	hosts/<h>/sealed/<release>  a release's config vars sealed to host h's key (SealedEnv)

// RootKey is the public half of the installation's root key, which only sync daemons hold.
type RootKey struct {
	Public      string    `json:"public"`
	Fingerprint string    `json:"fingerprint"`
	Updated     time.Time `json:"updated"`
}

// HostKey is what a host daemon publishes about itself: the key its instances' config vars
// are sealed to, and the Consul node it runs beside. Only the host's own token may write
// it, so it is also what the leader checks a host's registration against.
type HostKey struct {
	Public      string    `json:"public"`
	Fingerprint string    `json:"fingerprint"`
	Node        string    `json:"node"`
	Updated     time.Time `json:"updated"`
}

// SealedEnv is a release's config vars sealed to one host's key.
type SealedEnv struct {
	Release   string `json:"release"`
	Recipient string `json:"recipient"` // the fingerprint of the host key it is sealed to
	Box       string `json:"box"`
}

func (s *Store) rootKeyKey() string                 { return s.prefix + "keys/root" }
func (s *Store) releaseIDKeyKey() string            { return s.prefix + "keys/release-id" }
func (s *Store) secretsKey(formation string) string { return s.prefix + "secrets/" + formation + "/" }
func (s *Store) secretKey(formation, release string) string {
	return s.secretsKey(formation) + release
}
func (s *Store) hostKeyKey(host string) string { return s.hostsKey() + host + "/key" }
func (s *Store) sealedKey(host, release string) string {
	return s.hostsKey() + host + "/sealed/" + release
}

// RootKey reads the installation's root public key and its ModifyIndex; nil when none.
func (s *Store) RootKey(ctx context.Context) (*RootKey, uint64, error) {
	var k RootKey
	found, index, err := s.get(ctx, s.rootKeyKey(), &k)
	if err != nil || !found {
		return nil, 0, err
	}
	return &k, index, nil
}

// PutRootKey publishes the root public key and the sealed release-ID key if the root key's
// ModifyIndex is still index (0: none may exist yet), in one transaction.
func (s *Store) PutRootKey(ctx context.Context, k *RootKey, index uint64, releaseIDKey string) error {
	b := s.NewBatch()
	b.put(s.rootKeyKey(), k, ptr(index))
	b.putRaw(s.releaseIDKeyKey(), releaseIDKey)
	return s.Apply(ctx, b)
}

// ReleaseIDKey reads the sealed release-ID key ("" when none).
func (s *Store) ReleaseIDKey(ctx context.Context) (string, error) {
	pair, _, err := s.client.KV().Get(s.releaseIDKeyKey(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil {
		return "", err
	}
	return string(pair.Value), nil
}

// PutHostKey publishes a host's key and node.
func (s *Store) PutHostKey(ctx context.Context, host string, k *HostKey) error {
	return s.put(ctx, s.hostKeyKey(host), k, nil)
}

// HostKey reads a host's published key; nil when none.
func (s *Store) HostKey(ctx context.Context, host string) (*HostKey, error) {
	var k HostKey
	found, _, err := s.get(ctx, s.hostKeyKey(host), &k)
	if err != nil || !found {
		return nil, err
	}
	return &k, nil
}

// Sealed reads a release's config vars as sealed to host; nil when not written (yet).
func (s *Store) Sealed(ctx context.Context, host, release string) (*SealedEnv, error) {
	var e SealedEnv
	found, _, err := s.get(ctx, s.sealedKey(host, release), &e)
	if err != nil || !found {
		return nil, err
	}
	return &e, nil
}

// Secret reads a release's config vars sealed to the root key ("" when none).
func (s *Store) Secret(ctx context.Context, formation, release string) (string, error) {
	pair, _, err := s.client.KV().Get(s.secretKey(formation, release), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil || pair == nil {
		return "", err
	}
	return string(pair.Value), nil
}

// putRaw writes a value as it is (a sealed box is text, not JSON).
func (b *Batch) putRaw(key, value string) {
	b.ops = append(b.ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: []byte(value)}})
}

func (b *Batch) delete(key string) {
	b.ops = append(b.ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: key}})
}

// PutSecret writes a release's config vars sealed to the root key.
func (b *Batch) PutSecret(formation, release, sealed string) {
	b.putRaw(b.store.secretKey(formation, release), sealed)
}

// DeleteSecret removes a release's sealed config vars.
func (b *Batch) DeleteSecret(formation, release string) {
	b.delete(b.store.secretKey(formation, release))
}

// PutSealed writes a release's config vars sealed to a host.
func (b *Batch) PutSealed(host string, e *SealedEnv) {
	b.put(b.store.sealedKey(host, e.Release), e, nil)
}

// DeleteSealed removes a host's copy of a release's config vars.
func (b *Batch) DeleteSealed(host, release string) { b.delete(b.store.sealedKey(host, release)) }

// PutConfigRaw replaces a formation's config document (values as given: sealed) if its
// ModifyIndex is still index: what a key rotation writes.
func (b *Batch) PutConfigRaw(formation string, c map[string]string, index uint64) {
	b.put(b.store.configKey(formation), c, ptr(index))
}

// PutReleaseIDKey replaces the sealed release-ID key (a root key rotation seals it again).
func (b *Batch) PutReleaseIDKey(sealed string) { b.putRaw(b.store.releaseIDKeyKey(), sealed) }

// PutRootKeyCAS replaces the root public key if its ModifyIndex is still index.
func (b *Batch) PutRootKeyCAS(k *RootKey, index uint64) { b.put(b.store.rootKeyKey(), k, ptr(index)) }

// RootKeyIndex is the root key's ModifyIndex in the snapshot.
func (s *Snapshot) RootKeyIndex() uint64 { return s.indexes[s.store.rootKeyKey()] }

// addSecret decodes the keys of the layout above; handled is false for any other key.
func (snap *Snapshot) addSecret(parts []string, value []byte, into func(any) error) (handled bool, err error) {
	switch {
	case len(parts) == 2 && parts[0] == "keys" && parts[1] == "root":
		var k RootKey
		if err := into(&k); err != nil {
			return true, err
		}
		snap.RootKey = &k
	case len(parts) == 2 && parts[0] == "keys" && parts[1] == "release-id":
		snap.ReleaseIDKey = string(value)
	case len(parts) == 3 && parts[0] == "secrets":
		if snap.Secrets[parts[1]] == nil {
			snap.Secrets[parts[1]] = map[string]string{}
		}
		snap.Secrets[parts[1]][parts[2]] = string(value)
	case len(parts) == 3 && parts[0] == "hosts" && parts[2] == "key":
		var k HostKey
		if err := into(&k); err != nil {
			return true, err
		}
		snap.HostKeys[parts[1]] = &k
	case len(parts) == 4 && parts[0] == "hosts" && parts[2] == "sealed":
		var e SealedEnv
		if err := into(&e); err != nil {
			return true, err
		}
		if snap.Sealed[parts[1]] == nil {
			snap.Sealed[parts[1]] = map[string]*SealedEnv{}
		}
		snap.Sealed[parts[1]][parts[3]] = &e
	default:
		return false, nil
	}
	return true, nil
}

// checkRootKey is a consistency helper for error messages.
func (k *RootKey) String() string { return fmt.Sprintf("root key %s", k.Fingerprint) }

// TrustHost publishes a host's key record for a host registered by hand on the agent of
// client (what a host daemon does at its start): tests that register hosts without a host
// daemon use it, since the leader ignores a host with no key record.
func (s *Store) TrustHost(ctx context.Context, host, publicKey, fingerprint string) error {
	node, err := s.client.Agent().NodeName()
	if err != nil {
		return err
	}
	return s.PutHostKey(ctx, host, &HostKey{Public: publicKey, Fingerprint: fingerprint, Node: node, Updated: time.Now().UTC()})
}
