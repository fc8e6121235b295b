package hostd_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// A host publishes its key and node; a release's config vars reach its container only
// from the copy sealed to that key: a copy sealed to another key starts nothing, the
// host's own starts the instance with the values; the data dir keeps the key 0600 and the
// copy sealed, never a value in clear.
func TestSealedConfigVarsOpenedOnTheHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.run(t, e.config(t), nil)
	ctx := context.Background()

	var hk *state.HostKey
	testenv.Eventually(t, 30*time.Second, "the host's key published", func() bool {
		hk, _ = e.store.HostKey(ctx, e.hostID)
		return hk != nil
	})
	node, err := e.consul.Client.Agent().NodeName()
	if err != nil || hk.Node != node {
		t.Fatalf("key record node %q, agent node %q (%v)", hk.Node, node, err)
	}
	if st, err := os.Stat(filepath.Join(e.dataDir, "host.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("host.key: %v %v", st, err)
	}
	pub, err := seal.ParsePublic(hk.Public)
	if err != nil || pub.Fingerprint() != hk.Fingerprint {
		t.Fatalf("published key: %v", err)
	}

	const secret = "s3cr3t-value"
	rel := e.release(t, "sealed", func(r *state.Release) { r.Config, r.ConfigDigest = []string{"API_TOKEN"}, "digest" })
	seal1 := func(to seal.PublicKey, recipient string) {
		t.Helper()
		box, err := seal.SealEnv(to, map[string]string{"API_TOKEN": secret})
		if err != nil {
			t.Fatal(err)
		}
		b := e.store.NewBatch()
		b.PutSealed(e.hostID, &state.SealedEnv{Release: rel.ID, Recipient: recipient, Box: box})
		if err := e.store.Apply(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Sealed to another key: the instance waits.
	other, _ := seal.Generate()
	seal1(other.Public(), other.Public().Fingerprint())
	one := instances(rel, 1)
	e.assign(t, one)
	testenv.Eventually(t, 30*time.Second, "the host's status saying the instance waits for its copy", func() bool {
		st, _ := e.store.HostStatus(ctx, e.hostID)
		if st == nil {
			return false
		}
		for _, is := range st.Instances {
			if is.ID == one[0].ID && strings.Contains(is.Error, "not sealed to this host") {
				return true
			}
		}
		return false
	})
	if n := len(e.containers(t)); n != 0 {
		t.Fatalf("%d container(s) started without their config vars", n)
	}

	// Sealed to the host: it runs, with the value.
	seal1(pub, hk.Fingerprint)
	testenv.Eventually(t, 60*time.Second, "the instance passing", func() bool { return e.allPassing(one, "sealed") })
	info, err := e.docker.Client.ContainerInspect(ctx, e.containers(t)[one[0].ID].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(info.Config.Env, "API_TOKEN="+secret) {
		t.Fatalf("env %v lacks the config var", info.Config.Env)
	}
	// Nothing on the host's disk holds it in clear.
	filepath.WalkDir(e.dataDir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), secret) {
				t.Errorf("%s holds the value in clear", path)
			}
		}
		return nil
	})
}
