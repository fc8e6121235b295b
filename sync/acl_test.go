package sync_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

// The sync daemon works with ACLs on, default deny, and a token holding only the policy
// docs/sync.md documents (read from there, so the doc cannot drift from what works).
func TestSyncWithLeastPrivilegeToken(t *testing.T) {
	consul := testenv.NewConsul(t, testenv.ConsulACL())
	reg := testenv.NewRegistry(t)
	repo := testenv.NewGitServer(t).NewRepo(t, "acl")
	ctx := context.Background()

	rules := policyFromDoc(t, "sync")
	policy, _, err := consul.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: "gilliam-sync", Rules: rules}, nil)
	if err != nil {
		t.Fatalf("create policy from docs/sync.md: %v", err)
	}
	token, _, err := consul.Client.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	limited, err := api.NewClient(&api.Config{Address: consul.Addr, Token: token.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	// The token is limited: it cannot write outside the prefix.
	if _, err := limited.KV().Put(&api.KVPair{Key: "elsewhere", Value: []byte("x")}, nil); err == nil {
		t.Fatal("the limited token writes outside gilliam/")
	}

	// A live host, registered with the management token as a host daemon would with its own.
	if err := consul.Client.Agent().ServiceRegister(state.HostRegistration(state.Host{ID: "h1", Address: "127.0.0.1"}, time.Hour, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := consul.Client.Agent().PassTTL(state.HostCheckID("h1"), ""); err != nil {
		t.Fatal(err)
	}
	trustHost(t, state.NewStore(consul.Client, ""), "h1")
	ref := randomImage(t, reg)
	repo.Commit(map[string]string{"gilliam.yml": fmt.Sprintf("formation: acl\nservices:\n  web:\n    image: %s\n    scale: 2\n", ref)}, "init")

	store := state.NewStore(limited, "")
	s, err := sync.New(sync.Config{Key: rootKey, Repos: []gitwatch.RepoConfig{{URL: repo.URL}}, DataDir: t.TempDir(), Interval: 200 * time.Millisecond, LockTTL: 10 * time.Second, LockDelay: time.Millisecond}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	testenv.Eventually(t, 30*time.Second, "2 instances assigned to h1 (lock, deploy, placement with the limited token)", func() bool {
		a, _, err := store.Assignment(ctx, "h1")
		return err == nil && len(a.Instances) == 2
	})
	leader, _, err := consul.Client.KV().Get(store.LeaderKey(), nil)
	if err != nil || leader == nil || leader.Session == "" {
		t.Fatalf("leader lock not held: %+v %v", leader, err)
	}
}

// policyFromDoc returns the HCL between the "<!-- acl:NAME -->" and "<!-- /acl -->"
// markers in docs/NAME.md.
func policyFromDoc(t *testing.T, doc string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", doc+".md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := "<!-- acl:" + doc + " -->"
	i, j := strings.Index(s, start), strings.Index(s, "<!-- /acl -->")
	if i < 0 || j < i {
		t.Fatalf("docs/%s.md has no %s ... <!-- /acl --> block", doc, start)
	}
	block := s[i+len(start) : j]
	// Strip the code fence.
	if k := strings.Index(block, "```hcl"); k >= 0 {
		block = block[k+len("```hcl"):]
	}
	if k := strings.Index(block, "```"); k >= 0 {
		block = block[:k]
	}
	return block
}
