package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// env set takes a value from stdin or a file, seals it to the root key before it leaves
// the process, and env list shows names only (values with --reveal and the key); keys
// rotate seals everything again to a new key, which opens what the old one did, and Consul
// never holds a value in clear.
func TestEnvSealedAndKeysRotate(t *testing.T) {
	c := testenv.NewConsul(t)
	ctx := context.Background()
	store := state.NewStore(c.Client, "")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "sync.key")
	root, _, err := seal.LoadKeyFile(keyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	cli := func(in string, args ...string) (int, string, string) {
		t.Helper()
		stdin = strings.NewReader(in)
		defer func() { stdin = os.Stdin }()
		var out, errOut bytes.Buffer
		code := run(ctx, append(args, "--consul", c.Addr), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	// No root key in Consul yet: nothing can be sealed, and nothing is written.
	if code, _, errOut := cli("", "env", "set", "shop", "A=1"); code != 1 || !strings.Contains(errOut, "no root key yet") {
		t.Fatalf("env set before any root key: %d %q", code, errOut)
	}
	// A sync daemon publishes the key when it first leads; a pass of one does the same.
	s, err := sync.New(sync.Config{Key: root, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ReconcileOnce(ctx); err != nil {
		t.Fatal(err)
	}

	const fromStdin, fromFile = "pg://user:p4ss@db/shop", "-----BEGIN KEY-----\nline two"
	if code, out, errOut := cli(fromStdin+"\n", "env", "set", "shop", "DATABASE_URL", "-"); code != 0 || strings.Contains(out+errOut, fromStdin) {
		t.Fatalf("env set from stdin: %d %q %q", code, out, errOut)
	}
	file := filepath.Join(dir, "tls.key")
	os.WriteFile(file, []byte(fromFile+"\n"), 0o600)
	if code, out, errOut := cli("", "env", "set", "shop", "TLS_KEY", "--from-file", file); code != 0 {
		t.Fatalf("env set --from-file: %d %q %q", code, out, errOut)
	}
	if code, _, _ := cli("", "env", "set", "shop", "A", "B", "--from-file", file); code != 2 {
		t.Fatalf("--from-file with two names: exit %d, want 2", code)
	}
	if code, out, _ := cli("", "env", "list", "shop"); code != 0 || !strings.Contains(out, "DATABASE_URL=<redacted>") || strings.Contains(out, "p4ss") {
		t.Fatalf("env list: %d %q", code, out)
	}
	if code, _, errOut := cli("", "env", "list", "shop", "--reveal"); code != 1 || !strings.Contains(errOut, "no root key") {
		t.Fatalf("env list --reveal without the key: %d %q", code, errOut)
	}
	reveal := func() string {
		t.Helper()
		code, out, errOut := cli("", "env", "list", "shop", "--reveal", "--key-file", keyFile)
		if code != 0 {
			t.Fatalf("env list --reveal: %d %q", code, errOut)
		}
		return out
	}
	if out := reveal(); !strings.Contains(out, "DATABASE_URL="+fromStdin+"\n") || !strings.Contains(out, "TLS_KEY="+fromFile+"\n") {
		t.Fatalf("env list --reveal: %q", out)
	}
	noneInClear(t, c, fromStdin, "p4ss", "line two")

	// Rotate: a new key in the file, the old beside it, every value sealed again.
	code, out, errOut := cli("", "keys", "rotate", "--key-file", keyFile)
	if code != 0 || !strings.Contains(out, "2 config var(s) of 1 formation(s)") {
		t.Fatalf("keys rotate: %d %q %q", code, out, errOut)
	}
	next, _, err := seal.LoadKeyFile(keyFile, false)
	if err != nil || next.Public() == root.Public() {
		t.Fatalf("the key file after rotation: %v", err)
	}
	if old, _, err := seal.LoadKeyFile(keyFile+".old", false); err != nil || old.Public() != root.Public() {
		t.Fatalf("the old key is not kept: %v", err)
	}
	if out := reveal(); !strings.Contains(out, "DATABASE_URL="+fromStdin+"\n") {
		t.Fatalf("after rotation, the new key does not open: %q", out)
	}
	cfg, _, _ := store.Config(ctx, "shop")
	if _, err := root.Open(cfg["DATABASE_URL"]); err == nil {
		t.Fatal("the old key still opens a rotated value")
	}
	rk, _, _ := store.RootKey(ctx)
	if rk == nil || rk.Fingerprint != next.Public().Fingerprint() {
		t.Fatalf("Consul's root key after rotation: %+v", rk)
	}
	if code, out, _ := cli("", "keys"); code != 0 || !strings.Contains(out, "root key: "+next.Public().Fingerprint()) {
		t.Fatalf("keys show: %d %q", code, out)
	}
	// The daemon with the old key reads its file again and goes on; one with another key
	// does not lead.
	reloaded, err := sync.New(sync.Config{Key: root, ReloadKey: func() (*seal.Key, error) { k, _, err := seal.LoadKeyFile(keyFile, false); return k, err }, DataDir: t.TempDir()}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reloaded.ReconcileOnce(ctx); err != nil {
		t.Fatalf("a daemon whose key file was rotated: %v", err)
	}
	stranger, _ := seal.Generate()
	other, _ := sync.New(sync.Config{Key: stranger, DataDir: t.TempDir()}, store, nil)
	if _, _, err := other.ReconcileOnce(ctx); err == nil || !strings.Contains(err.Error(), "root key is not the installation's") {
		t.Fatalf("a daemon with another key: %v", err)
	}
	noneInClear(t, c, fromStdin, "p4ss", "line two")
}

// noneInClear reads every key in Consul's KV store and fails if a value holds a secret.
func noneInClear(t *testing.T, c *testenv.Consul, secrets ...string) {
	t.Helper()
	pairs, _, err := c.Client.KV().List("", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		for _, s := range secrets {
			if strings.Contains(string(p.Value), s) {
				t.Fatalf("%s holds %q in clear", p.Key, s)
			}
		}
	}
}
