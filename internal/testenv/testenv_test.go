package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/go-connections/nat"
	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/hashicorp/consul/api"
)

func TestConsulKVAndCatalog(t *testing.T) {
	c := NewConsul(t)
	kv := c.Client.KV()
	if _, err := kv.Put(&api.KVPair{Key: "gilliam/test", Value: []byte("v1")}, nil); err != nil {
		t.Fatal(err)
	}
	pair, _, err := kv.Get("gilliam/test", nil)
	if err != nil || pair == nil || string(pair.Value) != "v1" {
		t.Fatalf("get: %v %v", pair, err)
	}

	err = c.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 1234, Tags: []string{"t1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "web in the catalog", func() bool {
		svcs, _, err := c.Client.Catalog().Service("web", "", nil)
		return err == nil && len(svcs) == 1 && svcs[0].ServicePort == 1234
	})
}

// A persistent agent keeps its KV across a stop and a start on the same address, which is
// what tests of a Consul outage need.
func TestConsulRestartKeepsData(t *testing.T) {
	c := NewConsul(t, ConsulPersistent())
	if _, err := c.Client.KV().Put(&api.KVPair{Key: "k", Value: []byte("kept")}, nil); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	if _, _, err := c.Client.KV().Get("k", nil); err == nil {
		t.Fatal("the agent still answers after Stop")
	}
	c.Start()
	pair, _, err := c.Client.KV().Get("k", nil)
	if err != nil || pair == nil || string(pair.Value) != "kept" {
		t.Fatalf("after restart: %v %v", pair, err)
	}
}

func TestConsulACL(t *testing.T) {
	c := NewConsul(t, ConsulACL())
	anon, err := api.NewClient(&api.Config{Address: c.Addr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.KV().Put(&api.KVPair{Key: "x", Value: []byte("1")}, nil); err == nil {
		t.Fatal("an anonymous write succeeded with default_policy deny")
	}
	if _, err := c.Client.KV().Put(&api.KVPair{Key: "x", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("management token write: %v", err)
	}
}

func TestRegistryPushPullByDigest(t *testing.T) {
	d := NewDocker(t)
	reg := NewRegistry(t)
	ref := PushImage(t, d.TestImage(t), reg.Addr+"/test/app")
	if !strings.Contains(ref, "@sha256:") {
		t.Fatalf("not pinned by digest: %s", ref)
	}

	// The registry answers for the digest, and keeps it across Down and Up.
	digestRef, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Head(digestRef); err != nil {
		t.Fatalf("head %s: %v", ref, err)
	}
	reg.Down()
	if _, err := remote.Head(digestRef); err == nil {
		t.Fatal("the registry answers while down")
	}
	reg.Up()

	// The engine pulls it by digest from 127.0.0.1 over plain HTTP.
	d.PullImage(t, ref)
	t.Cleanup(func() { d.Client.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true}) })

	// One image pushed to test/app, counted once; none anywhere else.
	if n, other := reg.Pushes("test/app"), reg.Pushes("test"); n != 1 || other != 0 {
		t.Fatalf("pushes counted: test/app %d, test %d; want 1 and 0", n, other)
	}
}

// A data race report of a program run under -race is found in its output, between the
// lines the race detector frames it with.
func TestProcessRaces(t *testing.T) {
	p := &Process{}
	p.raw.WriteString("{\"msg\":\"started\"}\n==================\nWARNING: DATA RACE\nWrite at 0x00c by goroutine 7:\n  main.f()\n==================\n{\"msg\":\"stopped\"}\n")
	races := p.Races()
	if len(races) != 1 || !strings.Contains(races[0], "main.f()") {
		t.Fatalf("races found: %q", races)
	}
	p = &Process{}
	p.raw.WriteString("==================\nnot a race\n")
	if races := p.Races(); len(races) != 0 {
		t.Fatalf("races found in output without one: %q", races)
	}
}

func TestGitServerCloneFetchForcePushDelete(t *testing.T) {
	s := NewGitServer(t)
	r := s.NewRepo(t, "app")
	first := r.Commit(map[string]string{"README": "one\n"}, "first")

	repo, err := git.Clone(memory.NewStorage(), nil, &git.CloneOptions{URL: r.URL})
	if err != nil {
		t.Fatalf("clone %s: %v", r.URL, err)
	}
	assertRef(t, repo, "refs/remotes/origin/main", first)

	second := r.Commit(map[string]string{"README": "two\n"}, "second")
	fetch(t, repo, nil)
	assertRef(t, repo, "refs/remotes/origin/main", second)

	// A force-push back to the first commit, a new branch, then its deletion.
	r.PushRef("refs/heads/main", first)
	r.PushRef("refs/heads/feature", second)
	fetch(t, repo, nil)
	assertRef(t, repo, "refs/remotes/origin/main", first)
	assertRef(t, repo, "refs/remotes/origin/feature", second)

	r.DeleteRef("refs/heads/feature")
	remote, _ := repo.Remote("origin")
	refs, err := remote.List(&git.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		if ref.Name() == "refs/heads/feature" {
			t.Fatal("deleted branch still listed")
		}
	}
	if n := s.Count("app", GitFetch); n < 2 {
		t.Fatalf("fetches counted: %d, want at least 2", n)
	}
	if n := s.Count("app", GitListRefs); n < 3 {
		t.Fatalf("ref listings counted: %d, want at least 3", n)
	}
}

func TestGitServerBasicAuth(t *testing.T) {
	s := NewGitServer(t, GitBasicAuth("deploy", "s3cret"))
	r := s.NewRepo(t, "private")
	head := r.Commit(map[string]string{"a": "1"}, "init")

	_, err := git.Clone(memory.NewStorage(), nil, &git.CloneOptions{URL: r.URL,
		Auth: &githttp.BasicAuth{Username: "deploy", Password: "wrong"}})
	if !errors.Is(err, transport.ErrAuthenticationRequired) && !errors.Is(err, transport.ErrAuthorizationFailed) {
		t.Fatalf("clone with a wrong password: got %v, want an authentication error", err)
	}
	repo, err := git.Clone(memory.NewStorage(), nil, &git.CloneOptions{URL: r.URL,
		Auth: &githttp.BasicAuth{Username: "deploy", Password: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	assertRef(t, repo, "refs/remotes/origin/main", head)
}

func TestDockerTestImageServesHTTP(t *testing.T) {
	d := NewDocker(t)
	img := d.TestImage(t)
	ctx := context.Background()
	created, err := d.Client.ContainerCreate(ctx,
		&container.Config{Image: img, Env: []string{"PORT=8080", "MESSAGE=from the harness"},
			Labels: d.Label, ExposedPorts: nat.PortSet{"8080/tcp": {}}},
		&container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1"}}}},
		nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	inspect, err := d.Client.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	binding := inspect.NetworkSettings.Ports["8080/tcp"]
	if len(binding) == 0 {
		t.Fatal("no published port")
	}
	base := "http://127.0.0.1:" + binding[0].HostPort
	Eventually(t, 10*time.Second, "the test app to answer", func() bool {
		return HTTPGet(base+"/healthz") == "ok"
	})
	if got := HTTPGet(base + "/"); got != "from the harness" {
		t.Fatalf("GET /: %q", got)
	}
}

func assertRef(t *testing.T, repo *git.Repository, ref, want string) {
	t.Helper()
	got, err := repo.Reference(plumbing.ReferenceName(ref), true)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	if got.Hash().String() != want {
		t.Fatalf("%s = %s, want %s", ref, got.Hash(), want)
	}
}

func fetch(t *testing.T, repo *git.Repository, auth transport.AuthMethod) {
	t.Helper()
	err := repo.Fetch(&git.FetchOptions{Auth: auth, Force: true, Prune: true,
		RefSpecs: []gitconfig.RefSpec{"+refs/heads/*:refs/remotes/origin/*"}})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		t.Fatalf("fetch: %v", err)
	}
}

func TestLoggerKeepsTheLastLines(t *testing.T) {
	b := &tail{keep: 2}
	for _, s := range []string{"one\n", "two\nthree\n", "four\n"} {
		b.Write([]byte(s))
	}
	if got := strings.Join(b.last(), ","); got != "three,four" {
		t.Fatalf("kept %q, want the last two", got)
	}
}

// Statuses posted in one burst (a fast deploy posts pending and success within a second)
// list newest first, as Gitea's combined status sees them. Gitea's own newest-first order
// is by creation time in whole seconds: the forge test once read a pending posted in the
// same second as its success as the newest, and waited for ever.
func TestGiteaStatusesNewestFirst(t *testing.T) {
	t.Parallel()
	g := NewGitea(t)
	repo := g.NewRepo(t, "order")
	commit := repo.Commit("main", map[string]string{"README": "x"}, "one")
	states := []string{"pending", "success", "pending", "failure", "pending", "success"}
	for i, s := range states {
		g.API(t, "POST", fmt.Sprintf("/repos/%s/%s/statuses/%s", repo.Owner, repo.Name, commit),
			map[string]any{"state": s, "context": "gilliam/order", "description": fmt.Sprint(i)}, nil)
	}
	got := repo.Statuses(commit)
	if len(got) != len(states) || got[0].State != "success" || got[0].Description != fmt.Sprint(len(states)-1) {
		t.Fatalf("newest status %+v of %d, want the last posted (success, %d)", got[0], len(got), len(states)-1)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Description != fmt.Sprint(len(states)-1-i) {
			t.Fatalf("status %d is %+v: not newest first", i, got[i])
		}
	}
	var combined struct {
		State string `json:"state"`
	}
	g.API(t, "GET", fmt.Sprintf("/repos/%s/%s/commits/%s/status", repo.Owner, repo.Name, commit), nil, &combined)
	if combined.State != "success" {
		t.Fatalf("combined status %q, want success", combined.State)
	}
}
