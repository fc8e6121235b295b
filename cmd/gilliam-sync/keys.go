package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// The root key opens config vars (see docs/security.md). The sync daemons hold it, in a
// file (--key-file, 0600) or in the environment (GILLIAM_SYNC_KEY); it is never written to
// Consul.

// keyEnv is the environment variable that may hold the root key itself.
const keyEnv = "GILLIAM_SYNC_KEY"

// rootKeySource is where a command finds the root key.
type rootKeySource struct{ file *string }

func rootKeyFlag(fs *flag.FlagSet, what string) rootKeySource {
	return rootKeySource{file: fs.String("key-file", "", "file holding the installation's root key (mode 0600; else $"+keyEnv+")"+what)}
}

// load reads the root key: from --key-file, else $GILLIAM_SYNC_KEY, else from orCreate
// (made there when missing) when it is set. ok is false when no source is set.
func (s rootKeySource) load(orCreate string) (k *seal.Key, path string, err error) {
	switch {
	case *s.file != "":
		k, _, err = seal.LoadKeyFile(*s.file, false)
		return k, *s.file, err
	case os.Getenv(keyEnv) != "":
		k, err = seal.ParseKey(os.Getenv(keyEnv))
		if err != nil {
			return nil, "", fmt.Errorf("$%s: %w", keyEnv, err)
		}
		return k, "", nil
	case orCreate != "":
		k, _, err = seal.LoadKeyFile(orCreate, true)
		return k, orCreate, err
	}
	return nil, "", errors.New("no root key: give --key-file or $" + keyEnv)
}

var keysCmd = &command{
	name:    "keys",
	usage:   "[show] | rotate --key-file FILE",
	summary: "the keys config vars are sealed with: show their fingerprints, or rotate the root key",
	run:     runKeys,
}

func runKeys(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	src := rootKeyFlag(fs, "; rotate writes the new key there and keeps the old one beside it, .old")
	return manageCommand("keys", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		verb := "show"
		if len(args) > 0 {
			verb = args[0]
		}
		switch verb {
		case "show":
			return showKeys(ctx, st, stdout)
		case "rotate":
			if *src.file == "" {
				return usageError{"rotate needs --key-file: the new key is written there"}
			}
			return rotateKeys(ctx, st, *src.file, stdout)
		}
		return usageError{fmt.Sprintf("unknown keys verb %q: want show or rotate", verb)}
	})(ctx)
}

func showKeys(ctx context.Context, st *state.Store, stdout io.Writer) error {
	snap, err := st.Snapshot(ctx, 0, 0)
	if err != nil {
		return err
	}
	if snap.RootKey == nil {
		fmt.Fprintln(stdout, "root key: none yet (the first sync daemon to lead publishes it)")
	} else {
		fmt.Fprintf(stdout, "root key: %s (since %s)\n", snap.RootKey.Fingerprint, snap.RootKey.Updated.Format(time.RFC3339))
	}
	hosts := make([]string, 0, len(snap.HostKeys))
	for h := range snap.HostKeys {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		k := snap.HostKeys[h]
		fmt.Fprintf(stdout, "host %s: key %s, node %s, %d release(s) sealed to it\n", h, k.Fingerprint, k.Node, len(snap.Sealed[h]))
	}
	return nil
}

// rotateKeys makes a new root key, seals everything again to it in Consul, then puts it in
// path, keeping the old key at path.old. The new key is on disk (path.new) before Consul
// changes, so a failure in between loses nothing.
func rotateKeys(ctx context.Context, st *state.Store, path string, stdout io.Writer) error {
	old, _, err := seal.LoadKeyFile(path, false)
	if err != nil {
		return err
	}
	next, err := seal.Generate()
	if err != nil {
		return err
	}
	if err := seal.WriteKeyFile(path+".new", next); err != nil {
		return err
	}
	r, err := sync.RotateRootKey(ctx, st, old, next, time.Now())
	if err != nil {
		os.Remove(path + ".new")
		return err
	}
	if err := seal.WriteKeyFile(path+".old", old); err != nil {
		return fmt.Errorf("rotated in Consul; the new key is in %s.new: %w", path, err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		return fmt.Errorf("rotated in Consul; the new key is in %s.new: %w", path, err)
	}
	fmt.Fprintf(stdout, "root key rotated: %s -> %s; %d config var(s) of %d formation(s) and %d release(s) sealed again\n", r.From, r.To, r.Vars, r.Formation, r.Releases)
	fmt.Fprintf(stdout, "sync daemons reading %s take the new key at once; give it to those that read $%s, and restart them\n", path, keyEnv)
	return nil
}
