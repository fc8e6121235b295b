package hostd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/hostd"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// With ACLs on (default deny), a host daemon works with a token of the policy
// hostd.ACLRules gives, and that token can touch neither other hosts' documents nor its
// own assignment, nor the catalog of another node.
func TestWorksWithAHostScopedToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ConsulACL())
	acl := e.consul.Client.ACL()
	policy, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: "host-" + e.hostID, Rules: hostd.ACLRules("", e.hostID)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := acl.TokenCreate(&api.ACLToken{Description: "host daemon " + e.hostID, Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf := api.DefaultConfig()
	conf.Address, conf.Token = e.consul.Addr, token.SecretID
	client, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	hostStore := state.NewStore(client, "")

	d, err := hostd.New(e.config(t), hostStore, e.docker.Client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	rel := e.release(t, "acl", nil)
	two := instances(rel, 2)
	e.assign(t, two)
	testenv.Eventually(t, 60*time.Second, "2 passing instances, their status, and the host passing", func() bool {
		hosts, err := e.store.Hosts(context.Background())
		return e.current(two, "acl", time.Time{}) && err == nil && len(hosts) == 1 && hosts[0].Passing
	})
	if n := e.logs.count("converge failing") + e.logs.count("host liveness failing") + e.logs.count("assignment watch failing"); n > 0 {
		t.Errorf("%d failures with the host's token", n)
	}

	// What the token must not do.
	kv := client.KV()
	denied := func(what string, err error) {
		t.Helper()
		var se api.StatusError
		if !errors.As(err, &se) || se.Code != 403 {
			t.Errorf("%s: got %v, want permission denied", what, err)
		}
	}
	_, err = kv.Put(&api.KVPair{Key: "gilliam/hosts/other/status", Value: []byte("{}")}, nil)
	denied("write another host's status", err)
	_, err = kv.Put(&api.KVPair{Key: "gilliam/hosts/" + e.hostID + "/assignment", Value: []byte("{}")}, nil)
	denied("write its own assignment", err)
	_, _, err = kv.Get("gilliam/hosts/other/assignment", nil)
	denied("read another host's assignment", err)
	_, err = kv.Put(&api.KVPair{Key: "gilliam/formations/demo/desired", Value: []byte("{}")}, nil)
	denied("write a desired formation", err)
	_, err = kv.Put(&api.KVPair{Key: "gilliam/formations/demo/config", Value: []byte("{}")}, nil)
	denied("write config vars", err)
	_, err = kv.Put(&api.KVPair{Key: "gilliam/hosts/other/key", Value: []byte("{}")}, nil)
	denied("publish another host's key", err)
	_, _, err = kv.Get("gilliam/hosts/other/sealed/r1", nil)
	denied("read another host's sealed config vars", err)
	_, _, err = kv.Get("gilliam/secrets/demo/r1", nil)
	denied("read the releases' config vars sealed to the root key", err)
	_, _, err = kv.Get("gilliam/formations/demo/config", nil)
	denied("read config vars", err)
	_, err = kv.Put(&api.KVPair{Key: "gilliam/hosts/" + e.hostID + "/sealed/r1", Value: []byte("{}")}, nil)
	denied("write its own sealed copies", err)
	// What it may: its own key record, which it published.
	if k, err := hostStore.HostKey(context.Background(), e.hostID); err != nil || k == nil {
		t.Errorf("its own key record: %v %v", k, err)
	}
	_, err = client.Catalog().Register(&api.CatalogRegistration{Node: "elsewhere", Address: "10.0.0.1",
		Service: &api.AgentService{ID: "x", Service: "demo-web"}}, nil)
	denied("register on another node", err)
}
