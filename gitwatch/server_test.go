package gitwatch_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
)

// serve starts the receiver of cfg (Listen 127.0.0.1:0 unless set) for the watchers; it
// stops with the test.
func serve(t testing.TB, cfg gitwatch.ServerConfig, watchers ...*gitwatch.Watcher) *gitwatch.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	s, err := gitwatch.Listen(cfg, gitwatch.NewWebhooks(watchers, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// answer is everything a client sees of a response but the date.
func answer(t testing.TB, base string, forge gitwatch.Forge, body []byte, h http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/hooks/"+string(forge), bytes.NewReader(body))
	req.Header = h
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	resp.Header.Del("Date")
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	return fmt.Sprintf("%d\n%s\n%s", resp.StatusCode, hdr.String(), b)
}

// A hook for a repository nobody watches gets exactly the answer of a hook with a wrong
// or missing signature for a watched one: status, headers and body.
func TestWebhookUnknownRepositoryLikeBadSignature(t *testing.T) {
	for _, forge := range forges {
		t.Run(string(forge), func(t *testing.T) {
			h := newHookedRepo(t, forge, "app", false)
			s := serve(t, gitwatch.ServerConfig{}, h.w)
			base := "http://" + s.Addr().String()
			body := h.f.push(h.repo.URL)
			wrong := forgeHook{forge: forge, secret: "guess"}
			unsigned := h.f.headers(body, "push")
			for _, k := range []string{"X-Hub-Signature-256", "X-Gitea-Signature", "X-Gitlab-Token"} {
				unsigned.Del(k)
			}
			unknown := h.f.push("https://git.example.invalid/not/watched.git")
			var other gitwatch.Forge = gitwatch.GitHub
			if forge == gitwatch.GitHub {
				other = gitwatch.Gitea
			}
			want := answer(t, base, forge, body, wrong.headers(body, "push"))
			for name, got := range map[string]string{
				"unsigned, watched":              answer(t, base, forge, body, unsigned),
				"unknown repository, any secret": answer(t, base, forge, unknown, wrong.headers(unknown, "push")),
				"unknown repository, unsigned":   answer(t, base, forge, unknown, unsigned),
				"watched, through another forge": answer(t, base, other, body, forgeHook{forge: other, secret: h.f.secret}.headers(body, "push")),
			} {
				if got != want {
					t.Errorf("%s:\n%s\nwrong signature:\n%s", name, got, want)
				}
			}
			if !strings.HasPrefix(want, "401\n") {
				t.Fatalf("wrong signature: %s", want)
			}
		})
	}
}

// A client that sends headers, then part of a body, then nothing, is cut off by the read
// timeout; one that never finishes its headers by the header timeout. The times go to the
// report.
func TestWebhookServerTimeouts(t *testing.T) {
	s := serve(t, gitwatch.ServerConfig{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 500 * time.Millisecond})
	stall := func(request string) (time.Duration, string) {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, request)
		c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a bound for the test, not the figure
		got, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("the server held a stalled connection for 20 s: %q", got)
		}
		first, _, _ := strings.Cut(string(got), "\r\n")
		return time.Since(start), first
	}
	body, head := stall("POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"repository\":")
	header, _ := stall("POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Le")
	testenv.Report(t, "gitwatch-webhook-timeouts", fmt.Sprintf(
		"webhook receiver, read_header_timeout 300ms, read_timeout 500ms:\n"+
			"stalled body cut off after    %s (answer: %q)\nstalled headers cut off after %s",
		body.Round(time.Millisecond), head, header.Round(time.Millisecond)))
}

// Connections beyond max_connections wait for one to close; requests beyond max_requests
// wait queue_timeout for a slot, then get 503.
func TestWebhookServerCaps(t *testing.T) {
	t.Run("connections", func(t *testing.T) {
		s := serve(t, gitwatch.ServerConfig{MaxConnections: 2, ReadHeaderTimeout: time.Minute, ReadTimeout: time.Minute})
		var held []net.Conn
		for range 2 {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			io.WriteString(c, "POST /hooks/github HTTP/1.1\r\nHost: x\r\n") // and nothing more
			held = append(held, c)
		}
		third, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer third.Close()
		io.WriteString(third, "GET /hooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		third.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := third.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("a third connection was served while two were held: %d %v", n, err)
		}
		held[0].Close()
		third.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(third), nil)
		if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("the waiting connection, once one closed: %v %v", resp, err)
		}
	})
	t.Run("requests", func(t *testing.T) {
		s := serve(t, gitwatch.ServerConfig{MaxRequests: 1, QueueTimeout: 200 * time.Millisecond, ReadTimeout: time.Minute})
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Headers and part of a body: the request holds the only slot while its body is read.
		io.WriteString(c, "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
		time.Sleep(100 * time.Millisecond) // let it reach the handler
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + s.Addr().String() + "/hooks/github")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("a request beyond max_requests: %d %v", resp.StatusCode, resp.Header)
		}
		c.Close()
		testenv.Eventually(t, 10*time.Second, "the slot to free", func() bool {
			resp, err := http.Get("http://" + s.Addr().String() + "/hooks/github")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusMethodNotAllowed
		})
	})
}

// With a certificate and key the receiver serves HTTPS only (TLS 1.2 at least), and picks
// up a renewed certificate without a restart.
func TestWebhookServerTLS(t *testing.T) {
	h := newHookedRepo(t, gitwatch.GitHub, "tls", false)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := selfSigned(t, certFile, keyFile, "first")
	s := serve(t, gitwatch.ServerConfig{TLSCertFile: certFile, TLSKeyFile: keyFile}, h.w)
	base := "https://" + s.Addr().String()
	client := func(ca *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	}
	body := h.f.push(h.repo.URL)
	post := func(c *http.Client) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, base+"/hooks/github", bytes.NewReader(body))
		req.Header = h.f.headers(body, "push")
		return c.Do(req)
	}
	resp, err := post(client(first))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 1 {
		t.Fatalf("hook over TLS: %d %+v %s", resp.StatusCode, resp.TLS, resp.Proto)
	}
	if resp, err := http.Post("http://"+s.Addr().String()+"/hooks/github", "application/json", bytes.NewReader(body)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
	}
	old := &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}
	if c, err := tls.Dial("tcp", s.Addr().String(), old); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 accepted")
	}

	// Renewal: new files on disk, the next connection gets the new certificate.
	time.Sleep(10 * time.Millisecond) // a distinct modification time
	second := selfSigned(t, certFile, keyFile, "second")
	resp, err = post(client(second))
	if err != nil {
		t.Fatalf("after renewal: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("after renewal: %d", resp.StatusCode)
	}

	bad := gitwatch.ServerConfig{Listen: "127.0.0.1:0", TLSCertFile: certFile}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "tls_key_file") {
		t.Fatalf("a certificate without a key: %v", err)
	}
	os.WriteFile(keyFile, []byte("not a key"), 0o600)
	bad.TLSKeyFile = keyFile
	if err := bad.Validate(); err == nil {
		t.Fatal("an unreadable key validated")
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key, and returns it.
func selfSigned(t testing.TB, certFile, keyFile, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}
