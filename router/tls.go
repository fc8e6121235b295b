package router

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Certificates are the TLS certificates a router serves, chosen per name by SNI.
type Certificates struct {
	certs []*tls.Certificate // in file name order; the first is served to clients without SNI
}

// LoadCertificates reads every NAME.crt with its NAME.key in dir (PEM; a .crt may hold
// the chain after the leaf). Which names a certificate serves comes from the certificate
// itself (its DNS names, wildcards included), not from the file name.
func LoadCertificates(dir string) (*Certificates, error) {
	crts, err := filepath.Glob(filepath.Join(dir, "*.crt"))
	if err != nil {
		return nil, fmt.Errorf("tls certificates in %s: %w", dir, err)
	}
	sort.Strings(crts)
	c := &Certificates{}
	for _, crt := range crts {
		key := strings.TrimSuffix(crt, ".crt") + ".key"
		cert, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			return nil, fmt.Errorf("tls certificate %s with key %s: %w", crt, key, err)
		}
		if cert.Leaf == nil {
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, fmt.Errorf("tls certificate %s: %w", crt, err)
			}
		}
		c.certs = append(c.certs, &cert)
	}
	if len(c.certs) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("tls certificates: %w", err)
		}
		return nil, fmt.Errorf("tls certificates: no NAME.crt in %s", dir)
	}
	return c, nil
}

// GetCertificate is for tls.Config: the certificate whose names match the client's SNI,
// an exact name before a wildcard; the first certificate when none does.
func (c *Certificates) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := NormalizeHost(hello.ServerName)
	if name != "" {
		for _, cert := range c.certs {
			for _, n := range cert.Leaf.DNSNames {
				if strings.EqualFold(n, name) {
					return cert, nil
				}
			}
		}
		for _, cert := range c.certs {
			if cert.Leaf.VerifyHostname(name) == nil {
				return cert, nil
			}
		}
	}
	return c.certs[0], nil
}

// TLSConfig is a server configuration serving these certificates.
func (c *Certificates) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate,
		NextProtos: []string{"h2", "http/1.1"}}
}

// RedirectHTTPS answers every request with a permanent redirect to the same URL over
// HTTPS on httpsPort (omitted when 443), except ACME HTTP-01 challenges, which go to next
// (an ACME client plugged in there; see docs/router.md).
func RedirectHTTPS(httpsPort string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/.well-known/acme-challenge/") {
			next.ServeHTTP(w, req)
			return
		}
		host := NormalizeHost(req.Host)
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		}
		u := *req.URL
		u.Scheme, u.Host = "https", host
		http.Redirect(w, req, u.String(), http.StatusPermanentRedirect)
	})
}
