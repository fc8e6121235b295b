package gitwatch

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"
)

// RepoConfig is one entry of the watch list (`repos:` in gilliam-sync.yml). It decodes with
// gopkg.in/yaml.v3 with KnownFields set, so a misspelt key is an error, not a silent
// default. Validate fills in the defaults; docs/gitwatch.md shows an example.
type RepoConfig struct {
	// URL is the clone URL: https://, http://, ssh://, scp-like user@host:path, or a local
	// path. Credentials go in Auth, never in the URL.
	URL string `yaml:"url"`
	// Branches are deployed: names (main), or path.Match patterns (release/*), short or
	// full (refs/heads/main). Default [main] when neither Branches nor Tags is set.
	Branches []string `yaml:"branches,omitempty"`
	// Tags are deployed too: names or patterns (v*), short or full (refs/tags/v1).
	Tags []string `yaml:"tags,omitempty"`
	// Files are the gilliam.yml files in the repository, one formation each: a monorepo may
	// hold several. Default [gilliam.yml].
	Files []string `yaml:"files,omitempty"`
	// Auth says how to authenticate to the server; empty for a public repository.
	Auth Auth `yaml:"auth,omitempty"`
	// PollInterval is the time between two ref listings, jittered by ±20%. Default 1m.
	// Webhooks make a push visible at once; polling is the safety net.
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
	// Forge is the kind of server: github, gitlab or gitea. It names pull-request refs and
	// picks the webhook endpoint. Default: github for github.com, gitlab for gitlab.com.
	Forge Forge `yaml:"forge,omitempty"`
	// Webhook enables /hooks/<forge> for this repository.
	Webhook *Webhook `yaml:"webhook,omitempty"`
	// Previews deploys pull requests and branches matching patterns as previews.
	Previews *Previews `yaml:"previews,omitempty"`
	// Checkout bounds what a build's checkout of this repository may write.
	Checkout CheckoutLimits `yaml:"checkout,omitempty"`
	// Notify posts commit statuses and preview comments on the forge through its API
	// (docs/observability.md); nil posts nothing.
	Notify *Notify `yaml:"notify,omitempty"`
}

// Notify is how the sync daemon reaches the forge's API for one repository: a token (its
// file or environment variable, read at every request), and where the API is when it
// cannot be derived from the URL.
type Notify struct {
	TokenFile string `yaml:"token_file,omitempty"`
	TokenEnv  string `yaml:"token_env,omitempty"`
	// APIURL is the API's base: https://api.github.com, https://gitlab.com/api/v4,
	// https://gitea.example/api/v1. Default: derived from an https URL.
	APIURL string `yaml:"api_url,omitempty"`
	// Project is owner/name (GitLab: the full path). Default: the URL's path.
	Project string `yaml:"project,omitempty"`
	// Statuses and Comments turn commit statuses and pull-request comments off (both on
	// by default).
	Statuses *bool `yaml:"statuses,omitempty"`
	Comments *bool `yaml:"comments,omitempty"`
}

// Token reads the API token: failures are stalled (a person must provide it).
func (n *Notify) Token() (string, error) {
	return readSecret("forge API token", n.TokenFile, n.TokenEnv)
}

// WantStatuses and WantComments say what to post (default both).
func (n *Notify) WantStatuses() bool { return n != nil && (n.Statuses == nil || *n.Statuses) }
func (n *Notify) WantComments() bool { return n != nil && (n.Comments == nil || *n.Comments) }

// Auth is where the credentials for a repository come from. Files and environment
// variables are read at every connection, so a rotated token is picked up without a
// restart. Over HTTPS: a token, or a user name and password. Over SSH: a private key
// and a known_hosts file (host keys are always checked).
type Auth struct {
	// Username goes with a password, or with a token (default: x-access-token on GitHub,
	// oauth2 on GitLab, git elsewhere).
	Username     string `yaml:"username,omitempty"`
	PasswordFile string `yaml:"password_file,omitempty"`
	PasswordEnv  string `yaml:"password_env,omitempty"`
	TokenFile    string `yaml:"token_file,omitempty"`
	TokenEnv     string `yaml:"token_env,omitempty"`
	// SSHKeyFile is an unencrypted private key (OpenSSH or PEM format).
	SSHKeyFile string `yaml:"ssh_key_file,omitempty"`
	// KnownHostsFile holds the server's host key; required with SSHKeyFile.
	KnownHostsFile string `yaml:"known_hosts_file,omitempty"`
}

// Webhook is the shared secret a forge signs its hooks with.
type Webhook struct {
	SecretFile string `yaml:"secret_file,omitempty"`
	SecretEnv  string `yaml:"secret_env,omitempty"`
}

// Previews chooses which refs are deployed as previews besides the deployed branches.
type Previews struct {
	// PullRequests watches the forge's pull-request refs: refs/pull/<N>/head on GitHub and
	// Gitea, refs/merge-requests/<N>/head on GitLab.
	PullRequests bool `yaml:"pull_requests,omitempty"`
	// Branches are path.Match patterns of branch names (feature/*): each matching branch
	// is a preview, which works with any git server.
	Branches []string `yaml:"branches,omitempty"`
	// Forks lets pull requests from forks have previews: their code is anyone's. Off by
	// default; a pull request whose origin no signed webhook told counts as a fork.
	Forks bool `yaml:"forks,omitempty"`
}

// Forge is a kind of git server.
type Forge string

const (
	GitHub Forge = "github"
	GitLab Forge = "gitlab"
	Gitea  Forge = "gitea"
)

// DefaultPollInterval is the poll interval when none is set.
const DefaultPollInterval = time.Minute

// Validate fills in defaults and checks the entry, returning every problem at once.
func (c *RepoConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	scheme := urlScheme(c.URL)
	switch {
	case c.URL == "":
		bad("url", "required")
	case scheme == "http" || scheme == "https":
		u, err := url.Parse(c.URL)
		if err != nil {
			bad("url", "%v", scrub(err, c.URL))
		} else if u.User != nil {
			bad("url", "holds credentials: move them to auth (token_file, password_file or their _env forms)")
		}
	case scheme == "ssh" && strings.Contains(c.URL, "://"):
		if u, err := url.Parse(c.URL); err != nil {
			bad("url", "%v", scrub(err, c.URL))
		} else if _, hasPassword := u.User.Password(); hasPassword {
			bad("url", "holds a password: SSH authenticates with auth.ssh_key_file")
		}
	case scheme == "git":
		bad("url", "git:// is neither authenticated nor encrypted: use https:// or ssh://")
	}

	if len(c.Branches) == 0 && len(c.Tags) == 0 {
		c.Branches = []string{"main"}
	}
	for i, b := range c.Branches {
		if err := checkRefPattern(b, "refs/heads/"); err != nil {
			bad(fmt.Sprintf("branches[%d]", i), "%v", err)
		}
	}
	for i, t := range c.Tags {
		if err := checkRefPattern(t, "refs/tags/"); err != nil {
			bad(fmt.Sprintf("tags[%d]", i), "%v", err)
		}
	}

	if len(c.Files) == 0 {
		c.Files = []string{"gilliam.yml"}
	}
	seen := map[string]bool{}
	for i, f := range c.Files {
		field := fmt.Sprintf("files[%d]", i)
		switch clean := path.Clean(f); {
		case f == "" || strings.HasPrefix(f, "/") || clean == ".." || strings.HasPrefix(clean, "../"):
			bad(field, "%q: want a path inside the repository, like services/api/gilliam.yml", f)
		case seen[clean]:
			bad(field, "%q is listed twice", f)
		default:
			seen[clean] = true
		}
	}

	switch {
	case c.PollInterval < 0:
		bad("poll_interval", "%s is negative", c.PollInterval)
	case c.PollInterval == 0:
		c.PollInterval = DefaultPollInterval
	}

	if c.Forge == "" {
		c.Forge = forgeOf(c.URL)
	}
	switch c.Forge {
	case "", GitHub, GitLab, Gitea:
	default:
		bad("forge", "%q: want github, gitlab or gitea", c.Forge)
	}

	errs = append(errs, c.Auth.validate(scheme, loopback(c.URL))...)

	if c.Checkout.MaxFiles < 0 || c.Checkout.MaxBytes < 0 || c.Checkout.MaxFileBytes < 0 {
		bad("checkout", "limits cannot be negative")
	}
	c.Checkout = c.Checkout.withDefaults()

	if c.Webhook != nil {
		if c.Forge == "" {
			bad("webhook", "needs forge (github, gitlab or gitea) to know how hooks are signed")
		}
		if (c.Webhook.SecretFile == "") == (c.Webhook.SecretEnv == "") {
			bad("webhook", "set exactly one of secret_file and secret_env")
		}
	}
	if n := c.Notify; n != nil {
		if c.Forge == "" {
			bad("notify", "needs forge (github, gitlab or gitea) to know its API")
		}
		if (n.TokenFile == "") == (n.TokenEnv == "") {
			bad("notify", "set exactly one of token_file and token_env")
		}
		if n.APIURL != "" {
			u, err := url.Parse(n.APIURL)
			switch {
			case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
				bad("notify.api_url", "%q: want an https:// URL", n.APIURL)
			case u.User != nil:
				bad("notify.api_url", "holds credentials: the token goes in token_file or token_env")
			case u.Scheme == "http" && !loopback(n.APIURL):
				bad("notify.api_url", "a token over plain http:// would travel in the clear: use https://")
			}
		} else if s := urlScheme(c.URL); s != "https" && !(s == "http" && loopback(c.URL)) {
			bad("notify.api_url", "required: the API cannot be derived from a %s URL", s)
		}
		if n.Project == "" && urlScheme(c.URL) != "https" && urlScheme(c.URL) != "http" {
			bad("notify.project", "required: the project (owner/name) cannot be derived from a non-https URL")
		}
	}
	if p := c.Previews; p != nil {
		if p.PullRequests && c.Forge == "" {
			bad("previews.pull_requests", "needs forge (github, gitlab or gitea) to know the pull-request refs")
		}
		for i, b := range p.Branches {
			if err := checkRefPattern(b, "refs/heads/"); err != nil {
				bad(fmt.Sprintf("previews.branches[%d]", i), "%v", err)
			}
		}
		if p.Forks && !p.PullRequests {
			bad("previews.forks", "only means something with pull_requests: true")
		}
	}
	return errors.Join(errs...)
}

func (a Auth) validate(scheme string, loopback bool) []error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("auth.%s: %s", field, msg)) }
	token := a.TokenFile != "" || a.TokenEnv != ""
	password := a.PasswordFile != "" || a.PasswordEnv != ""
	ssh := a.SSHKeyFile != "" || a.KnownHostsFile != ""
	if a.TokenFile != "" && a.TokenEnv != "" {
		bad("token_file", "set token_file or token_env, not both")
	}
	if a.PasswordFile != "" && a.PasswordEnv != "" {
		bad("password_file", "set password_file or password_env, not both")
	}
	if token && password {
		bad("token_file", "set a token or a password, not both")
	}
	if password && a.Username == "" {
		bad("username", "required with a password")
	}
	if ssh && (token || password || a.Username != "") {
		bad("ssh_key_file", "SSH uses a key: drop username, token and password (the user is in the URL, ssh://git@host/...)")
	}
	if a.SSHKeyFile != "" && a.KnownHostsFile == "" {
		bad("known_hosts_file", "required with ssh_key_file: host keys are always checked")
	}
	if a.KnownHostsFile != "" && a.SSHKeyFile == "" {
		bad("ssh_key_file", "required with known_hosts_file")
	}
	switch {
	case scheme == "ssh" && (token || password):
		bad("token_file", "an ssh:// URL authenticates with ssh_key_file, not a token or password")
	case scheme == "ssh" && a.SSHKeyFile == "":
		bad("ssh_key_file", "required for an ssh:// URL, with known_hosts_file")
	case ssh && scheme != "ssh":
		bad("ssh_key_file", "needs an ssh:// or user@host:path URL")
	case scheme == "http" && (token || password) && !loopback:
		bad("token_file", "credentials over plain http:// would travel in the clear: use https://")
	}
	return errs
}

// ValidateRepos validates every entry (filling defaults) and checks that no repository is
// listed twice. Errors name the entry: repos[1].branches[0]: ...
func ValidateRepos(repos []RepoConfig) error {
	var errs []error
	first := map[string]int{}
	for i := range repos {
		if err := repos[i].Validate(); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("repos[%d]: %w", i, e))
			}
		}
		key := repoKey(repos[i].URL)
		if key == "" {
			continue
		}
		if j, dup := first[key]; dup {
			errs = append(errs, fmt.Errorf("repos[%d]: url: the repository of repos[%d] again (%s): list its branches, tags and files in one entry", i, j, Sanitize(repos[i].URL)))
			continue
		}
		first[key] = i
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkRefPattern checks a branch or tag name or pattern; prefix is the namespace short
// names live in.
func checkRefPattern(p, prefix string) error {
	if p == "" {
		return errors.New("empty")
	}
	full := p
	if !strings.HasPrefix(p, "refs/") {
		full = prefix + p
	}
	if !strings.HasPrefix(full, prefix) {
		return fmt.Errorf("%q is not under %s", p, prefix)
	}
	if _, err := path.Match(full, ""); err != nil {
		return fmt.Errorf("%q: bad pattern: %v", p, err)
	}
	if strings.Contains(p, "..") || strings.ContainsAny(p, " ~^:\\") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%q is not a valid ref name", p)
	}
	return nil
}

// urlScheme is the scheme of a clone URL: scp-like user@host:path counts as ssh, a local
// path as file.
func urlScheme(raw string) string {
	if i := strings.Index(raw, "://"); i > 0 {
		return strings.ToLower(raw[:i])
	}
	if at, colon := strings.Index(raw, "@"), strings.Index(raw, ":"); colon > 0 && (at < 0 || at < colon) && !strings.HasPrefix(raw, "/") {
		if slash := strings.Index(raw, "/"); slash < 0 || slash > colon {
			return "ssh"
		}
	}
	return "file"
}

// loopback reports whether the URL's host is this machine, where plain http:// carries
// no risk for credentials.
func loopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	switch u.Hostname() {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// forgeOf guesses the forge from the two public hosts everyone knows.
func forgeOf(raw string) Forge {
	switch host, _, _ := strings.Cut(repoKey(raw), "/"); host {
	case "github.com":
		return GitHub
	case "gitlab.com":
		return GitLab
	}
	return ""
}

// repoKey names a repository independently of how its URL is written, so that a webhook's
// clone_url, ssh_url or html_url finds the configured entry: lower-case host (with its
// port unless it is the scheme's default) and path, without user, scheme, ".git" or
// slashes at either end. "" when raw is not a URL.
func repoKey(raw string) string {
	var host, p string
	switch scheme := urlScheme(raw); scheme {
	case "file":
		if raw == "" {
			return ""
		}
		return "file:" + path.Clean(strings.TrimPrefix(raw, "file://"))
	case "ssh":
		if !strings.Contains(raw, "://") { // user@host:path
			rest := raw[strings.Index(raw, "@")+1:]
			host, p, _ = strings.Cut(rest, ":")
			break
		}
		fallthrough
	default:
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return ""
		}
		host, p = u.Hostname(), u.Path
		if port := u.Port(); port != "" && port != map[string]string{"http": "80", "https": "443", "ssh": "22"}[scheme] {
			host += ":" + port
		}
	}
	p = strings.TrimSuffix(strings.Trim(p, "/"), ".git")
	return strings.ToLower(host + "/" + strings.Trim(p, "/"))
}
