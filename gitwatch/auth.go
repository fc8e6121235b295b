package gitwatch

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// credentials returns the auth method for one connection. It runs before every listing and
// fetch, so files and variables are read afresh and a rotated token needs no restart.
type credentials func() (transport.AuthMethod, error)

// sshDialTimeout bounds the TCP connection to an SSH server.
const sshDialTimeout = 30 * time.Second

// credentials turns the configuration into a credentials function for rawURL.
func (a Auth) credentials(rawURL string, forge Forge) credentials {
	switch {
	case a.SSHKeyFile != "":
		return func() (transport.AuthMethod, error) { return sshKeyAuth(rawURL, a.SSHKeyFile, a.KnownHostsFile) }
	case a.TokenFile != "" || a.TokenEnv != "":
		user := a.Username
		if user == "" {
			user = map[Forge]string{GitHub: "x-access-token", GitLab: "oauth2"}[forge]
		}
		if user == "" {
			user = "git"
		}
		return func() (transport.AuthMethod, error) {
			token, err := readSecret("token", a.TokenFile, a.TokenEnv)
			if err != nil {
				return nil, err
			}
			return &githttp.BasicAuth{Username: user, Password: token}, nil
		}
	case a.PasswordFile != "" || a.PasswordEnv != "":
		return func() (transport.AuthMethod, error) {
			password, err := readSecret("password", a.PasswordFile, a.PasswordEnv)
			if err != nil {
				return nil, err
			}
			return &githttp.BasicAuth{Username: a.Username, Password: password}, nil
		}
	}
	return func() (transport.AuthMethod, error) { return nil, nil }
}

// readSecret reads a secret from a file or an environment variable, trimming the newline
// editors and `echo` leave. Failures are stalled: a person must provide the secret.
func readSecret(what, file, env string) (string, error) {
	var value string
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &StalledError{Reason: what + " unreadable", Err: err}
		}
		if value = strings.TrimSpace(string(b)); value == "" {
			return "", &StalledError{Reason: what + " unreadable", Err: fmt.Errorf("%s is empty", file)}
		}
		return value, nil
	}
	if value = strings.TrimSpace(os.Getenv(env)); value == "" {
		return "", &StalledError{Reason: what + " unreadable", Err: fmt.Errorf("environment variable %s is empty or unset", env)}
	}
	return value, nil
}

// sshKey is go-git's public key auth with a bounded dial.
type sshKey struct{ *gitssh.PublicKeys }

func (k sshKey) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := k.PublicKeys.ClientConfig()
	if err == nil {
		c.Timeout = sshDialTimeout
	}
	return c, err
}

// sshKeyAuth authenticates with the private key in keyFile and accepts only the host keys
// knownHostsFile lists for the server. There is no fallback to accepting any key.
func sshKeyAuth(rawURL, keyFile, knownHostsFile string) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", Sanitize(rawURL), err)
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, keyFile, "")
	if err != nil {
		return nil, &StalledError{Reason: "ssh key unreadable", Err: fmt.Errorf("%s: %w", keyFile, err)}
	}
	// go-git's own loader skips missing files and then blames SSH_KNOWN_HOSTS: say it plainly.
	if _, err := os.Stat(knownHostsFile); err != nil {
		return nil, &StalledError{Reason: "known_hosts unreadable", Err: err}
	}
	db, err := gitssh.NewKnownHostsDb(knownHostsFile)
	if err != nil {
		return nil, &StalledError{Reason: "known_hosts unreadable", Err: fmt.Errorf("%s: %w", knownHostsFile, err)}
	}
	port := ep.Port
	if port <= 0 {
		port = gitssh.DefaultPort
	}
	keys.HostKeyCallback = checkHostKey(db.HostKeyCallback(), knownHostsFile)
	// Ask the server for the key types known_hosts holds for it, not whichever it prefers.
	keys.HostKeyAlgorithms = db.HostKeyAlgorithms(net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	return sshKey{keys}, nil
}

// checkHostKey turns known_hosts refusals into errors that say what happened and what to do.
func checkHostKey(next ssh.HostKeyCallback, file string) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := next(host, remote, key)
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return err
		}
		fp := ssh.FingerprintSHA256(key)
		if len(ke.Want) == 0 {
			return &StalledError{Reason: "unknown host key", Err: fmt.Errorf(
				"host %s offered %s key %s, which %s does not list: refusing to connect (check the fingerprint with the server's administrator, then add the key)",
				host, key.Type(), fp, file)}
		}
		return &StalledError{Reason: "host key changed", Err: fmt.Errorf(
			"host %s offered %s key %s, which does not match %s: refusing to connect (the server was re-keyed, or someone is in the middle)",
			host, key.Type(), fp, file)}
	}
}
