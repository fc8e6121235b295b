package gitwatch_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// Smart HTTP with basic auth: the right password polls, a wrong one is a clear, stalled
// error with no event, and the password shows nowhere.
func TestHTTPBasicAuth(t *testing.T) {
	const password = "s3cret-pa55"
	s := testenv.NewGitServer(t, testenv.GitBasicAuth("deploy", password))
	r := s.NewRepo(t, "private")
	c1 := r.Commit(map[string]string{"a": "1"}, "one")

	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Auth: gitwatch.Auth{Username: "deploy", PasswordFile: writeSecret(t, password)}}, nil)
	wantEvents(t, "with the right password", poll(t, w), gitwatch.Event{Repo: r.URL, Ref: "refs/heads/main", New: c1, Kind: gitwatch.KindPush})

	log, logged := newLogs()
	wrong := watch(t, gitwatch.RepoConfig{URL: r.URL, Auth: gitwatch.Auth{Username: "deploy", PasswordFile: writeSecret(t, "wrong-"+password)}}, log)
	events, err := wrong.Poll(context.Background())
	if err == nil || len(events) != 0 {
		t.Fatalf("wrong password: events %s, err %v", fmtEvents(events), err)
	}
	if !strings.Contains(err.Error(), "credentials refused") || !strings.Contains(err.Error(), r.URL) || !gitwatch.Stalled(err) {
		t.Fatalf("wrong password: want a stalled 'credentials refused' error naming the repository, got %v", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Fatalf("the error shows the password: %v", err)
	}

	// Run reports it once, never as an event, and the password is not in the log.
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan gitwatch.Event, 1)
	done := make(chan struct{})
	go func() { wrong.Run(ctx, out); close(done) }()
	testenv.Eventually(t, 5*time.Second, "polling failing logged", func() bool {
		return len(logged.lines("polling failing", "stalled=true")) == 1
	})
	cancel()
	<-done
	if len(out) != 0 {
		t.Fatalf("a failing repository sent %v", <-out)
	}
	if strings.Contains(logged.String(), password) {
		t.Fatalf("the log shows the password:\n%s", logged)
	}

	// Credentials in the URL (Open, as older configurations did) stay out of errors and events.
	u := strings.Replace(r.URL, "http://", "http://deploy:wrong-"+password+"@", 1)
	repo, err := gitwatch.Open(u, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = gitwatch.NewWatcher(repo, []string{"main"}, nil).Poll(context.Background())
	if err == nil || strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "deploy:") {
		t.Fatalf("credentials from the URL in the error: %v", err)
	}
	good := strings.Replace(r.URL, "http://", "http://deploy:"+password+"@", 1)
	repo, err = gitwatch.Open(good, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	events = poll(t, gitwatch.NewWatcher(repo, []string{"main"}, nil))
	if len(events) != 1 || events[0].Repo != r.URL {
		t.Fatalf("events from a URL with credentials: %s", fmtEvents(events))
	}
}

// A token (here from an environment variable) is sent as a basic-auth password; a token
// read from a file is read again at every connection, so rotating it needs no restart.
func TestHTTPTokenAuth(t *testing.T) {
	s := testenv.NewGitServer(t, testenv.GitBasicAuth("git", "tok-2"))
	r := s.NewRepo(t, "tokens")
	r.Commit(map[string]string{"a": "1"}, "one")

	t.Setenv("GILLIAM_TEST_TOKEN", "tok-2")
	w := watch(t, gitwatch.RepoConfig{URL: r.URL, Auth: gitwatch.Auth{TokenEnv: "GILLIAM_TEST_TOKEN"}}, nil)
	if got := poll(t, w); len(got) != 1 {
		t.Fatalf("token from env: %s", fmtEvents(got))
	}

	file := writeSecret(t, "tok-1")
	w = watch(t, gitwatch.RepoConfig{URL: r.URL, Auth: gitwatch.Auth{TokenFile: file}}, nil)
	if _, err := w.Poll(context.Background()); !gitwatch.Stalled(err) {
		t.Fatalf("old token: %v", err)
	}
	if err := os.WriteFile(file, []byte("tok-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := poll(t, w); len(got) != 1 {
		t.Fatalf("rotated token: %s", fmtEvents(got))
	}

	t.Setenv("GILLIAM_TEST_TOKEN", "")
	w = watch(t, gitwatch.RepoConfig{URL: r.URL, Auth: gitwatch.Auth{TokenEnv: "GILLIAM_TEST_TOKEN"}}, nil)
	if _, err := w.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "GILLIAM_TEST_TOKEN is empty or unset") {
		t.Fatalf("unset token variable: %v", err)
	}
}

// SSH with a private key against a real sshd; host keys are checked against known_hosts
// and an unknown or changed one is refused with a clear error.
func TestSSH(t *testing.T) {
	s := testenv.NewGitServer(t)
	r := s.NewRepo(t, "app")
	c1 := r.Commit(map[string]string{"a": "1"}, "one")
	sshd := testenv.NewSSHGitServer(t, s)
	url := sshd.URL(r)

	cfg := gitwatch.RepoConfig{URL: url, Auth: gitwatch.Auth{SSHKeyFile: sshd.ClientKey, KnownHostsFile: sshd.KnownHosts}}
	w := watch(t, cfg, nil)
	wantEvents(t, "over ssh", poll(t, w), gitwatch.Event{Repo: gitwatch.Sanitize(url), Ref: "refs/heads/main", New: c1, Kind: gitwatch.KindPush})
	c2 := r.Commit(map[string]string{"a": "2"}, "two")
	wantEvents(t, "push over ssh", poll(t, w), gitwatch.Event{Repo: gitwatch.Sanitize(url), Ref: "refs/heads/main", Old: c1, New: c2, Kind: gitwatch.KindPush})
	if b, err := w.Repo().ReadFile(c2, "a"); err != nil || string(b) != "2" {
		t.Fatalf("read after an ssh fetch: %q %v", b, err)
	}

	host, port, _ := net.SplitHostPort(sshd.Addr)
	otherKey := newPublicKey(t)
	for _, tc := range []struct {
		name, knownHosts, want string
	}{
		{"host absent", "[example.com]:22 " + string(ssh.MarshalAuthorizedKey(sshd.HostKey)), "unknown host key"},
		{"empty file", "", "unknown host key"},
		{"host key changed", fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(otherKey)), "host key changed"},
	} {
		known := filepath.Join(t.TempDir(), "known_hosts")
		if err := os.WriteFile(known, []byte(tc.knownHosts), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := gitwatch.RepoConfig{URL: url, Auth: gitwatch.Auth{SSHKeyFile: sshd.ClientKey, KnownHostsFile: known}}
		events, err := watch(t, cfg, nil).Poll(context.Background())
		if err == nil || len(events) != 0 {
			t.Fatalf("%s: events %s, err %v", tc.name, fmtEvents(events), err)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "refusing to connect") ||
			!strings.Contains(err.Error(), known) || !gitwatch.Stalled(err) {
			t.Errorf("%s: want a stalled %q error naming %s, got %v", tc.name, tc.want, known, err)
		}
	}

	// A key the server does not know.
	stranger := filepath.Join(t.TempDir(), "id_ed25519")
	testenv.WriteSSHKey(t, stranger)
	cfg = gitwatch.RepoConfig{URL: url, Auth: gitwatch.Auth{SSHKeyFile: stranger, KnownHostsFile: sshd.KnownHosts}}
	if _, err := watch(t, cfg, nil).Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "credentials refused") || !gitwatch.Stalled(err) {
		t.Fatalf("unknown client key: %v", err)
	}

	// A key file that is not there says so.
	cfg = gitwatch.RepoConfig{URL: url, Auth: gitwatch.Auth{SSHKeyFile: stranger + ".nope", KnownHostsFile: sshd.KnownHosts}}
	if _, err := watch(t, cfg, nil).Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "ssh key unreadable") {
		t.Fatalf("missing key file: %v", err)
	}
}

func newPublicKey(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
