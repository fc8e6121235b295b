package hostd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/follow"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
)

// mesh is the host-to-host leg of the sibling proxy: a listener on the advertise address
// that other hosts' proxies reach this host's instances through, over mutual TLS with
// certificates of Consul's Connect CA. Each side presents the leaf certificate of the
// gilliam-host service and accepts only a peer whose certificate chains to the CA's roots
// and names that service in its SPIFFE ID: a machine that is not a gilliam host (Consul
// grants that certificate to holders of service:write on gilliam-host) cannot connect.
// The peer then names an instance and a port; only an instance running here, on one of
// its release's ports, is dialled.
type mesh struct {
	d    *Daemon
	addr string // host:port other hosts dial, registered in instances' meta
	ln   net.Listener

	leaf  atomic.Pointer[tls.Certificate]
	roots atomic.Pointer[meshRoots]

	server, client *tls.Config
}

type meshRoots struct {
	pool        *x509.CertPool
	trustDomain string
}

// meshTimeout bounds a connection's handshake and its request.
const meshTimeout = 5 * time.Second

// startMesh listens and follows the Connect CA's roots and this host's leaf certificate.
func (d *Daemon) startMesh(ctx context.Context, wg *sync.WaitGroup) error {
	ln, err := d.meshListener()
	if err != nil {
		return fmt.Errorf("hostd: mesh listener: %w", err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = d.cfg.Advertise
	}
	m := &mesh{d: d, addr: net.JoinHostPort(host, port), ln: ln}
	m.server = &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert, // verified below, against the Connect CA
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.certificate()
		},
		VerifyPeerCertificate: m.verify,
	}
	m.client = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The server is checked by verify (the Connect CA, the gilliam-host identity), not
		// by name: a host's certificate names its service, not its address.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.certificate()
		},
		VerifyPeerCertificate: m.verify,
		ClientSessionCache:    tls.NewLRUClientSessionCache(256),
	}
	d.mesh.Store(m)
	d.log.Info("mesh listening", "addr", m.addr)
	wg.Add(4)
	go func() { defer wg.Done(); <-ctx.Done(); ln.Close() }()
	go func() { defer wg.Done(); m.serve() }()
	go func() { defer wg.Done(); m.followRoots(ctx) }()
	go func() { defer wg.Done(); m.followLeaf(ctx) }()
	return nil
}

// meshListener listens on MeshListen; without one, on the advertise address and the port
// it had last time (kept in the data dir), so that a restarted daemon's registrations, which
// name it, stay as they are; on any free port when that one is taken.
func (d *Daemon) meshListener() (net.Listener, error) {
	if d.cfg.MeshListen != "" {
		return net.Listen("tcp", d.cfg.MeshListen)
	}
	file := ""
	if d.cfg.DataDir != "" {
		file = filepath.Join(d.cfg.DataDir, "mesh-port")
		if b, err := os.ReadFile(file); err == nil {
			if ln, err := net.Listen("tcp", net.JoinHostPort(d.cfg.Advertise, strings.TrimSpace(string(b)))); err == nil {
				return ln, nil
			}
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(d.cfg.Advertise, "0"))
	if err != nil {
		return nil, err
	}
	if file != "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		if err := os.MkdirAll(d.cfg.DataDir, 0o755); err == nil {
			err = os.WriteFile(file, []byte(port+"\n"), 0o644)
		}
		if err != nil {
			d.log.Warn("mesh: keep the port for the next start", "err", err)
		}
	}
	return ln, nil
}

func (m *mesh) certificate() (*tls.Certificate, error) {
	if c := m.leaf.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no leaf certificate from Consul's Connect CA yet")
}

func (m *mesh) followRoots(ctx context.Context) {
	d := m.d
	(&follow.Follower{Name: "connect ca roots", Wait: d.cfg.WatchWait, StaleAfter: d.cfg.ConsulTimeout, MinDelay: d.cfg.WatchMinDelay, Log: d.log,
		Fetch: func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
			roots, meta, err := d.store.Client().Agent().ConnectCARoots((&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
			if err != nil {
				return 0, fmt.Errorf("connect ca roots: %w", err)
			}
			pool := x509.NewCertPool()
			for _, r := range roots.Roots {
				pool.AppendCertsFromPEM([]byte(r.RootCertPEM))
			}
			m.roots.Store(&meshRoots{pool: pool, trustDomain: roots.TrustDomain})
			return meta.LastIndex, nil
		},
		Changed: func() {},
	}).Run(ctx)
}

func (m *mesh) followLeaf(ctx context.Context) {
	d := m.d
	(&follow.Follower{Name: "connect leaf", Wait: d.cfg.WatchWait, StaleAfter: d.cfg.ConsulTimeout, MinDelay: d.cfg.WatchMinDelay, Log: d.log,
		Fetch: func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
			leaf, meta, err := d.store.Client().Agent().ConnectCALeaf(names.HostService, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
			if err != nil {
				return 0, fmt.Errorf("connect leaf certificate: %w", err)
			}
			cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
			if err != nil {
				return 0, fmt.Errorf("connect leaf certificate: %w", err)
			}
			if m.leaf.Swap(&cert) == nil {
				d.log.Info("mesh certificate from Consul's Connect CA", "service", names.HostService, "valid_before", leaf.ValidBefore)
			}
			return meta.LastIndex, nil
		},
		Changed: func() {},
	}).Run(ctx)
}

// verify accepts a peer whose certificate chains to the Connect CA's roots and whose
// SPIFFE ID is the gilliam-host service's in the CA's trust domain.
func (m *mesh) verify(raw [][]byte, _ [][]*x509.Certificate) error {
	roots := m.roots.Load()
	if roots == nil {
		return errors.New("no Connect CA roots from Consul yet")
	}
	if len(raw) == 0 {
		return errors.New("no peer certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots.pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	if !slices.ContainsFunc(certs[0].URIs, func(u *url.URL) bool { return hostIdentity(u, roots.trustDomain) }) {
		return fmt.Errorf("peer certificate: not a gilliam host's (%v)", certs[0].URIs)
	}
	return nil
}

// hostIdentity says whether u is the SPIFFE ID Connect gives the gilliam-host service:
// spiffe://<trust domain>/ns/<ns>/dc/<dc>/svc/gilliam-host.
func hostIdentity(u *url.URL, trustDomain string) bool {
	return u.Scheme == "spiffe" && strings.EqualFold(u.Host, trustDomain) && strings.HasSuffix(u.Path, "/svc/"+names.HostService)
}

func (m *mesh) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.d.log.Warn("mesh: accept", "err", err)
			}
			return
		}
		go m.handle(tls.Server(c, m.server))
	}
}

// handle serves one connection: after the handshake, a line "<instance> <port>", then
// "+" and the instance's bytes, or "-<why>" and the end.
func (m *mesh) handle(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(meshTimeout))
	if err := c.Handshake(); err != nil {
		m.d.log.Debug("mesh: handshake refused", "from", c.RemoteAddr().String(), "err", err)
		return
	}
	line, err := readLine(c)
	if err != nil {
		return
	}
	instance, portStr, _ := strings.Cut(line, " ")
	port, _ := strconv.Atoi(portStr)
	var li localInstance
	var ok bool
	if local := m.d.local.Load(); local != nil {
		li, ok = (*local)[instance]
	}
	if !ok || !slices.Contains(li.Ports, port) {
		fmt.Fprintf(c, "-no instance %s with port %d here\n", instance, port)
		return
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort(li.IP, strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		fmt.Fprintf(c, "-%v\n", err)
		return
	}
	defer up.Close()
	if _, err := c.Write([]byte("+\n")); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	splice(c, up)
}

// dial reaches an instance on another host through its mesh listener at addr.
func (m *mesh) dial(addr, instance string, port int) (net.Conn, error) {
	if m == nil || addr == "" {
		return nil, errors.New("no mesh to reach another host through")
	}
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, m.client)
	c.SetDeadline(time.Now().Add(meshTimeout))
	fail := func(err error) (net.Conn, error) { c.Close(); return nil, fmt.Errorf("mesh %s: %w", addr, err) }
	if err := c.Handshake(); err != nil {
		return fail(err)
	}
	if _, err := fmt.Fprintf(c, "%s %d\n", instance, port); err != nil {
		return fail(err)
	}
	line, err := readLine(c)
	if err != nil {
		return fail(err)
	}
	if line != "+" {
		return fail(errors.New(strings.TrimPrefix(line, "-")))
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// readLine reads one short line a byte at a time: nothing after it is consumed.
func readLine(c net.Conn) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 512 {
		if _, err := c.Read(one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", errors.New("line too long")
}
