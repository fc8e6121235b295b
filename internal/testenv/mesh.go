package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// SelfSignedMeshCall asks a host daemon's mesh listener at addr for port of instance, as
// an attacker would: with a certificate of its own making that names the gilliam-host
// service but is not signed by Consul's Connect CA. It returns nil if the mesh let it
// through, which no test should ever see.
func SelfSignedMeshCall(addr, instance string, port int) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	id, _ := url.Parse("spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/" + names.HostService)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "%s %d\n", instance, port)
	b := make([]byte, 2)
	if _, err := io.ReadFull(conn, b); err != nil {
		return err
	}
	if string(b) != "+\n" {
		return fmt.Errorf("refused: %q", b)
	}
	return nil
}
