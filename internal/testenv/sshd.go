package testenv

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHGitServer serves the bare repositories of a GitServer over SSH, through a real OpenSSH
// sshd: Debian's openssh-server, unpacked into the tools folder by `make tools` (nothing
// is installed on the machine). It listens on 127.0.0.1 only, with a config file written
// here (no system config), a fresh ed25519 host key and one authorized client key; git
// runs git-upload-pack on the server side, as it would on any git host.
//
// sshd runs unprivileged as a made-up user "git", given to it by nss_wrapper (also from
// Debian, through LD_PRELOAD). Unprivileged because sshd running as root insists on its
// privilege-separation user and /run/sshd, which only installing the package creates;
// when the test runs as root, sshd is started as uid/gid 65534 instead, and the folders
// above the repositories are made traversable for it.
type SSHGitServer struct {
	// Addr is the host:port sshd listens on, 127.0.0.1 and a free port.
	Addr string
	// User is the user to log in as: git.
	User string
	// ClientKey is the path of an unencrypted private key (OpenSSH format) the server
	// accepts.
	ClientKey string
	// KnownHosts is the path of a known_hosts file that lists the server's host key under
	// [127.0.0.1]:port.
	KnownHosts string
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey

	git *GitServer
}

// sshdUID is who sshd runs as when the test runs as root: nobody, on Debian.
const sshdUID = 65534

// NewSSHGitServer starts sshd serving git's repositories; t.Cleanup stops it.
func NewSSHGitServer(t testing.TB, git *GitServer) *SSHGitServer {
	t.Helper()
	root := filepath.Join(ToolsDir(t), "openssh", "root")
	sshd := filepath.Join(root, "usr", "sbin", "sshd")
	libs, _ := filepath.Glob(filepath.Join(root, "usr", "lib", "*-linux-gnu"))
	if _, err := os.Stat(sshd); err != nil || len(libs) != 1 {
		t.Fatalf("testenv: sshd not found at %s: run `make tools` (make test does)", sshd)
	}
	nssWrapper := filepath.Join(libs[0], "libnss_wrapper.so")
	if _, err := os.Stat(nssWrapper); err != nil {
		t.Fatalf("testenv: nss_wrapper not found at %s: run `make tools` (make test does)", nssWrapper)
	}

	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = sshdUID, sshdUID
		openUp(t, git.Root)
	}

	// sshd's files live outside t.TempDir, whose top folder only the test's user may enter.
	dir, err := os.MkdirTemp("", "gilliam-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	s := &SSHGitServer{User: "git", ClientKey: filepath.Join(dir, "client_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts"), git: git}

	hostKey := WriteSSHKey(t, hostKeyFile)
	s.HostKey = hostKey
	clientKey := WriteSSHKey(t, s.ClientKey)
	writeFile(t, filepath.Join(dir, "authorized_keys"), "restrict "+string(ssh.MarshalAuthorizedKey(clientKey)))
	writeFile(t, filepath.Join(dir, "passwd"), fmt.Sprintf("git:x:%d:%d:git:%s:/bin/sh\n", uid, gid, home))
	writeFile(t, filepath.Join(dir, "group"), fmt.Sprintf("git:x:%d:\n", gid))
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		for _, p := range []string{hostKeyFile, home} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The port may be taken between FreePort and sshd's bind: try a few.
	var out *lines
	for attempt := 0; ; attempt++ {
		s.Addr = freeAddr(t)
		config := filepath.Join(dir, "sshd_config")
		writeFile(t, config, sshdConfig(s.Addr, dir, hostKeyFile))
		cmd := exec.Command(sshd, "-D", "-e", "-f", config)
		cmd.Env = []string{
			"LD_LIBRARY_PATH=" + libs[0],
			"LD_PRELOAD=" + nssWrapper,
			"NSS_WRAPPER_PASSWD=" + filepath.Join(dir, "passwd"),
			"NSS_WRAPPER_GROUP=" + filepath.Join(dir, "group"),
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if os.Getuid() == 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		}
		out = &lines{}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("testenv: start sshd: %v", err)
		}
		exited := make(chan struct{})
		go func() {
			out.read(stderr)
			cmd.Wait()
			close(exited)
		}()
		if waitListening(s.Addr, exited) {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				if t.Failed() {
					t.Logf("sshd log:\n%s", out.String())
				}
			})
			break
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 2 || !strings.Contains(out.String(), "Bind to port") {
			t.Fatalf("testenv: sshd did not start:\n%s", out.String())
		}
	}

	known := knownHostsLine(s.Addr, hostKey)
	writeFile(t, s.KnownHosts, known)
	return s
}

// URL is the SSH clone URL of a repository of the git server: ssh://git@127.0.0.1:port/<path>.
func (s *SSHGitServer) URL(r *GitRepo) string {
	return "ssh://" + s.User + "@" + s.Addr + filepath.ToSlash(r.Bare)
}

// knownHostsLine is the known_hosts line for a host key at addr (host:port).
func knownHostsLine(addr string, key ssh.PublicKey) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("[%s]:%s %s", host, port, ssh.MarshalAuthorizedKey(key))
}

// sshdConfig is the whole configuration: nothing comes from /etc/ssh.
func sshdConfig(addr, dir, hostKey string) string {
	return strings.Join([]string{
		"ListenAddress " + addr,
		"HostKey " + hostKey,
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"AllowUsers git",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PermitUserEnvironment no",
		"AllowTcpForwarding no",
		"X11Forwarding no",
		// git refuses repositories owned by another user unless told they are safe.
		"SetEnv GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*",
		"LogLevel VERBOSE",
		"",
	}, "\n")
}

// WriteSSHKey writes a new ed25519 private key in OpenSSH format (mode 0600) and returns its
// public half.
func WriteSSHKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// openUp lets other users traverse the folders from dir up to the temporary folder, so
// that sshd running as nobody reaches the repositories (t.TempDir's top folder is 0700).
func openUp(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+string(filepath.Separator)); d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, info.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
}

// waitListening waits until addr accepts connections (true), or sshd exits or 10 seconds
// pass (false).
func waitListening(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// lines collects a process's output for failure messages.
type lines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.b.WriteString(sc.Text() + "\n")
		l.mu.Unlock()
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
