package gitwatch_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// daemonConfig is how the sync daemon embeds the watch list in gilliam-sync.yml.
type daemonConfig struct {
	Webhooks gitwatch.ServerConfig `yaml:"webhooks"`
	Repos    []gitwatch.RepoConfig `yaml:"repos"`
}

func decode(t *testing.T, text string) (daemonConfig, error) {
	t.Helper()
	var c daemonConfig
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	err := dec.Decode(&c)
	return c, err
}

func TestConfigDecodeStrict(t *testing.T) {
	c, err := decode(t, `
repos:
  - url: https://github.com/acme/shop.git
    branches: [main, "release/*"]
    tags: ["v*"]
    files: [gilliam.yml, payments/gilliam.yml]
    auth: {token_env: GITHUB_TOKEN}
    poll_interval: 30s
    webhook: {secret_file: /etc/gilliam/hook-secret}
    previews:
      pull_requests: true
      branches: ["feature/*"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := gitwatch.ValidateRepos(c.Repos); err != nil {
		t.Fatal(err)
	}
	got := c.Repos[0]
	if got.PollInterval != 30*time.Second || got.Forge != gitwatch.GitHub || got.Auth.TokenEnv != "GITHUB_TOKEN" ||
		len(got.Files) != 2 || !got.Previews.PullRequests || got.Webhook.SecretFile != "/etc/gilliam/hook-secret" {
		t.Fatalf("decoded %+v", got)
	}

	for _, bad := range []string{
		"repos:\n  - url: https://x/y.git\n    branch: main\n",                 // misspelt key
		"repos:\n  - url: https://x/y.git\n    auth: {tokenfile: /t}\n",        // misspelt nested key
		"repos:\n  - url: https://x/y.git\n    poll_interval: 30\n",            // a bare number is not a duration
		"repos:\n  - url: https://x/y.git\n    previews: {pull_request: on}\n", // misspelt preview key
	} {
		if _, err := decode(t, bad); err == nil {
			t.Errorf("decoded without error:\n%s", bad)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := gitwatch.RepoConfig{URL: "https://gitlab.com/acme/shop.git"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Branches) != 1 || c.Branches[0] != "main" || len(c.Files) != 1 || c.Files[0] != "gilliam.yml" ||
		c.PollInterval != gitwatch.DefaultPollInterval || c.Forge != gitwatch.GitLab {
		t.Fatalf("defaults: %+v", c)
	}
	tagsOnly := gitwatch.RepoConfig{URL: "https://git.example.com/a/b.git", Tags: []string{"v*"}}
	if err := tagsOnly.Validate(); err != nil || len(tagsOnly.Branches) != 0 || tagsOnly.Forge != "" {
		t.Fatalf("tags only: %+v %v", tagsOnly, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  gitwatch.RepoConfig
		want string
	}{
		{"no url", gitwatch.RepoConfig{}, "url: required"},
		{"password in url", gitwatch.RepoConfig{URL: "https://bob:hunter2@git.example.com/a.git"}, "url: holds credentials"},
		{"token in url", gitwatch.RepoConfig{URL: "https://ghp_secret@github.com/a/b.git"}, "url: holds credentials"},
		{"git protocol", gitwatch.RepoConfig{URL: "git://example.com/a.git"}, "neither authenticated nor encrypted"},
		{"bad branch pattern", gitwatch.RepoConfig{URL: "https://x.com/a.git", Branches: []string{"release/["}}, "branches[0]: \"release/[\": bad pattern"},
		{"tag under heads", gitwatch.RepoConfig{URL: "https://x.com/a.git", Tags: []string{"refs/heads/v1"}}, "tags[0]: \"refs/heads/v1\" is not under refs/tags/"},
		{"file outside", gitwatch.RepoConfig{URL: "https://x.com/a.git", Files: []string{"../gilliam.yml"}}, "files[0]: \"../gilliam.yml\": want a path inside the repository"},
		{"file twice", gitwatch.RepoConfig{URL: "https://x.com/a.git", Files: []string{"a/gilliam.yml", "a/./gilliam.yml"}}, "files[1]: \"a/./gilliam.yml\" is listed twice"},
		{"negative interval", gitwatch.RepoConfig{URL: "https://x.com/a.git", PollInterval: -time.Second}, "poll_interval: -1s is negative"},
		{"unknown forge", gitwatch.RepoConfig{URL: "https://x.com/a.git", Forge: "bitbucket"}, "forge: \"bitbucket\": want github, gitlab or gitea"},
		{"webhook without forge", gitwatch.RepoConfig{URL: "https://x.com/a.git", Webhook: &gitwatch.Webhook{SecretEnv: "S"}}, "webhook: needs forge"},
		{"webhook without secret", gitwatch.RepoConfig{URL: "https://github.com/a/b.git", Webhook: &gitwatch.Webhook{}}, "webhook: set exactly one of secret_file and secret_env"},
		{"pull requests without forge", gitwatch.RepoConfig{URL: "https://x.com/a.git", Previews: &gitwatch.Previews{PullRequests: true}}, "previews.pull_requests: needs forge"},
		{"bad preview pattern", gitwatch.RepoConfig{URL: "https://x.com/a.git", Previews: &gitwatch.Previews{Branches: []string{"[x"}}}, "previews.branches[0]"},
		{"password without user", gitwatch.RepoConfig{URL: "https://x.com/a.git", Auth: gitwatch.Auth{PasswordEnv: "P"}}, "auth.username: required with a password"},
		{"token and password", gitwatch.RepoConfig{URL: "https://x.com/a.git", Auth: gitwatch.Auth{Username: "u", PasswordEnv: "P", TokenEnv: "T"}}, "set a token or a password, not both"},
		{"token file and env", gitwatch.RepoConfig{URL: "https://x.com/a.git", Auth: gitwatch.Auth{TokenFile: "/t", TokenEnv: "T"}}, "set token_file or token_env, not both"},
		{"credentials over http", gitwatch.RepoConfig{URL: "http://git.example.com/a.git", Auth: gitwatch.Auth{TokenEnv: "T"}}, "would travel in the clear"},
		{"ssh without key", gitwatch.RepoConfig{URL: "ssh://git@x.com/a.git"}, "auth.ssh_key_file: required for an ssh:// URL"},
		{"scp-like without key", gitwatch.RepoConfig{URL: "git@x.com:a/b.git"}, "auth.ssh_key_file: required for an ssh:// URL"},
		{"ssh key without known_hosts", gitwatch.RepoConfig{URL: "ssh://git@x.com/a.git", Auth: gitwatch.Auth{SSHKeyFile: "/k"}}, "auth.known_hosts_file: required with ssh_key_file"},
		{"ssh key over https", gitwatch.RepoConfig{URL: "https://x.com/a.git", Auth: gitwatch.Auth{SSHKeyFile: "/k", KnownHostsFile: "/h"}}, "needs an ssh:// or user@host:path URL"},
		{"token over ssh", gitwatch.RepoConfig{URL: "ssh://git@x.com/a.git", Auth: gitwatch.Auth{TokenEnv: "T"}}, "not a token or password"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") || err != nil && strings.Contains(err.Error(), "ghp_secret") {
			t.Errorf("%s: the error shows the credentials: %v", tc.name, err)
		}
	}

	ok := []gitwatch.RepoConfig{
		{URL: "http://127.0.0.1:8080/a.git", Auth: gitwatch.Auth{Username: "u", PasswordEnv: "P"}}, // loopback
		{URL: "git@github.com:acme/shop.git", Auth: gitwatch.Auth{SSHKeyFile: "/k", KnownHostsFile: "/h"}},
		{URL: "/srv/git/shop.git"},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", c.URL, err)
		}
	}
}

func TestValidateReposNamesEntries(t *testing.T) {
	err := gitwatch.ValidateRepos([]gitwatch.RepoConfig{
		{URL: "https://github.com/acme/shop.git"},
		{URL: "https://github.com/acme/web.git", Forge: "nope"},
		{URL: "git@github.com:Acme/Shop.git", Auth: gitwatch.Auth{SSHKeyFile: "/k", KnownHostsFile: "/h"}},
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"repos[1]: forge: \"nope\"", "repos[2]: url: the repository of repos[0] again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in:\n%v", want, err)
		}
	}
}

// Every watch list example in docs/gitwatch.md decodes strictly and validates.
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "docs", "gitwatch.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(doc, -1)
	n := 0
	for _, b := range blocks {
		if !bytes.Contains(b[1], []byte("repos:")) {
			continue
		}
		n++
		c, err := decode(t, string(b[1]))
		if err == nil {
			err = gitwatch.ValidateRepos(c.Repos)
		}
		if err != nil {
			t.Errorf("example %d: %v\n%s", n, err, b[1])
		}
	}
	if n == 0 {
		t.Fatal("no watch list example in docs/gitwatch.md")
	}
}

// notify: a token reference (exactly one), an API that can be found and never takes a token
// over plain HTTP.
func TestNotifyConfig(t *testing.T) {
	for _, c := range []struct {
		yaml, err string
	}{
		{"url: https://github.com/acme/shop.git\nnotify: {token_env: T}", ""},
		{"url: https://gitea.example/ops/edge.git\nforge: gitea\nnotify: {token_file: /t, statuses: false}", ""},
		{"url: ssh://git@gitea.example/ops/edge.git\nforge: gitea\nauth: {ssh_key_file: /k, known_hosts_file: /h}\nnotify: {token_file: /t, api_url: https://gitea.example/api/v1, project: ops/edge}", ""},
		{"url: https://git.example/a/b.git\nnotify: {token_env: T}", "notify: needs forge"},
		{"url: https://github.com/acme/shop.git\nnotify: {}", "exactly one of token_file and token_env"},
		{"url: https://github.com/acme/shop.git\nnotify: {token_env: T, token_file: /t}", "exactly one of token_file and token_env"},
		{"url: https://github.com/acme/shop.git\nnotify: {token_env: T, api_url: http://api.example.com}", "in the clear"},
		{"url: ssh://git@gitea.example/ops/edge.git\nforge: gitea\nauth: {ssh_key_file: /k, known_hosts_file: /h}\nnotify: {token_file: /t}", "notify.api_url: required"},
	} {
		var rc gitwatch.RepoConfig
		dec := yaml.NewDecoder(strings.NewReader(c.yaml))
		dec.KnownFields(true)
		if err := dec.Decode(&rc); err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		err := rc.Validate()
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.yaml, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: got %v, want %q", c.yaml, err, c.err)
		}
	}
	rc := gitwatch.RepoConfig{Notify: &gitwatch.Notify{Statuses: new(bool)}}
	if rc.Notify.WantStatuses() || !rc.Notify.WantComments() {
		t.Fatal("statuses: false turns statuses off only")
	}
}
