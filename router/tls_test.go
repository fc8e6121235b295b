package router

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Each name gets its own certificate by SNI (exact names before wildcards), requests over
// TLS are routed and say https in X-Forwarded-Proto, and the HTTP side redirects to HTTPS.
func TestTLSBySNIAndRedirect(t *testing.T) {
	dir := t.TempDir()
	pool := x509.NewCertPool()
	writeCert(t, dir, "a-wildcard", pool, "*.localhost")
	writeCert(t, dir, "b-shop", pool, "shop.example.com")
	writeCert(t, dir, "c-hello", pool, "hello.localhost")
	certs, err := LoadCertificates(dir)
	if err != nil {
		t.Fatal(err)
	}

	client, _ := api.NewClient(api.DefaultConfig()) // not called: the table is set below
	r, err := New(Config{Consul: client})
	if err != nil {
		t.Fatal(err)
	}
	inst := newBackend(t, "inst", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, req.Header.Get("X-Forwarded-Proto"))
	}))
	addr := strings.TrimPrefix(inst.srv.URL, "http://")
	r.rebuild([]Instance{{Formation: "hello", Service: "web", Addr: addr, Passing: true},
		{Formation: "shop", Service: "web", Addr: addr, Passing: true}}, nil)

	srv := httptest.NewUnstartedServer(r)
	srv.TLS = certs.TLSConfig()
	srv.StartTLS()
	defer srv.Close()
	for name, want := range map[string]string{
		"hello.localhost": "hello.localhost", "other.localhost": "*.localhost",
		"shop.example.com": "shop.example.com", "unknown.test": "*.localhost",
	} {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name, InsecureSkipVerify: name == "unknown.test"}}}
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.Host = name
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].DNSNames[0]; got != want {
			t.Errorf("SNI %s: served the certificate of %s, want %s", name, got, want)
		}
		if name == "hello.localhost" && (resp.StatusCode != 200 || string(b) != "https") {
			t.Errorf("over TLS: %d %q, want 200 and X-Forwarded-Proto https", resp.StatusCode, b)
		}
	}

	redirect := httptest.NewServer(RedirectHTTPS("8443", r))
	defer redirect.Close()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", redirect.URL+"/a?b=c", nil)
	req.Host = "hello.localhost"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://hello.localhost:8443/a?b=c" {
		t.Errorf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// writeCert writes a self-signed certificate for names as dir/file.crt and .key.
func writeCert(t *testing.T, dir, file string, pool *x509.CertPool, names ...string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, file+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
