package build

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registries says which registries the images repositories name may come from: `image:`
// services, and the base images a Dockerfile would make the engine pull. A reference is
// written by whoever pushes to a watched repository, so without a policy it could point
// gilliam-sync (or the engine) at the host's loopback (Consul, the registry's admin paths),
// the cloud metadata address or a private network.
//
// The rules:
//   - a registry listed in Allowed or Insecure is allowed, whatever its address;
//   - when Allowed is empty, any other registry is allowed if its name is not an address
//     of the loopback, link-local (169.254.0.0/16, fe80::/10), private (10/8, 172.16/12,
//     192.168/16, 100.64/10, fc00::/7) or unspecified ranges, nor localhost; and every
//     connection made for it goes to a public address (checked when dialling, so a name
//     that resolves to 127.0.0.1, a redirect or a token realm pointing there fail too);
//   - when Allowed is not empty, only the listed registries are allowed;
//   - plain HTTP is used only for registries listed in Insecure; the others are reached
//     over HTTPS only.
type Registries struct {
	// Allowed lists registries (host or host:port, as written in image references; Docker
	// Hub is index.docker.io). Empty: any registry with a public address.
	Allowed []string
	// Insecure lists registries reached over plain HTTP. A registry listed here is allowed.
	Insecure []string
	// Keychain gives the credentials to read with; nil means the Docker keychain.
	Keychain authn.Keychain
}

// listed says whether registry is in list (names compared without case).
func listed(list []string, registry string) bool {
	for _, r := range list {
		if strings.EqualFold(strings.TrimSuffix(r, "/"), registry) {
			return true
		}
	}
	return false
}

func (p Registries) listed(registry string) bool {
	return listed(p.Allowed, registry) || listed(p.Insecure, registry)
}

// PolicyError is an image reference the registry policy refuses: the repository's fault,
// not something a retry fixes.
type PolicyError struct {
	Image, Registry, Why string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("image %s: registry %s is not allowed: %s (builds.allowed_registries and builds.insecure_registries in gilliam-sync.yml)", e.Image, e.Registry, e.Why)
}

// Check says whether image may be used, from its name alone (the dial-time check comes on
// top when Resolve connects).
func (p Registries) Check(image string) (name.Reference, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", image, err)
	}
	registry := ref.Context().RegistryStr()
	if p.listed(registry) {
		if listed(p.Insecure, registry) {
			ref, err = name.ParseReference(image, name.Insecure)
		}
		return ref, err
	}
	if len(p.Allowed) > 0 {
		return nil, &PolicyError{Image: image, Registry: registry, Why: "not listed"}
	}
	if why := privateHost(registry); why != "" {
		return nil, &PolicyError{Image: image, Registry: registry, Why: why}
	}
	return ref, nil
}

// privateHost says why a registry's host is not a public one, or "" when it may be.
func privateHost(registry string) string {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	lower := strings.ToLower(strings.TrimSuffix(host, "."))
	if lower == "localhost" || strings.HasSuffix(lower, ".localhost") {
		return "localhost is the host itself"
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		return privateAddr(addr)
	}
	return ""
}

// cgnat is the shared address space of carrier-grade NAT, private in practice.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// privateAddr says why addr is not a public address, or "".
func privateAddr(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		return "a link-local address (the cloud metadata service lives there)"
	case addr.IsPrivate(), cgnat.Contains(addr):
		return "a private address"
	case addr.IsUnspecified(), addr.IsMulticast(), addr.IsInterfaceLocalMulticast():
		return "not a unicast address"
	}
	return ""
}

// Resolve pins image to the digest its tag points at now, within the policy. A refused
// reference is a *PolicyError.
func (p Registries) Resolve(ctx context.Context, image string) (string, error) {
	ref, err := p.Check(image)
	if err != nil {
		return "", err
	}
	if d, ok := ref.(name.Digest); ok {
		return d.String(), nil
	}
	keychain := p.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain),
		remote.WithTransport(p.transport()))
	var perr *PolicyError
	if errors.As(err, &perr) {
		perr.Image = image
		return "", perr
	}
	if err != nil {
		return "", fmt.Errorf("resolve image %s: %w", image, err)
	}
	return ref.Context().Name() + "@" + desc.Digest.String(), nil
}

// publicOnly marks a request whose connections must go to public addresses.
type publicOnly struct{}

// transport enforces the policy on every request ggcr makes, redirects and token fetches
// included: plain HTTP only to registries listed insecure, and connections to addresses
// that are not public only for listed registries. It uses no HTTP proxy: the check is on
// the address dialled.
func (p Registries) transport() http.RoundTripper {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	base := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			d := *dialer
			if ctx.Value(publicOnly{}) != nil {
				d.Control = func(_, address string, _ syscall.RawConn) error {
					ap, err := netip.ParseAddrPort(address)
					if err != nil {
						return err
					}
					if why := privateAddr(ap.Addr()); why != "" {
						return &PolicyError{Registry: address, Why: why}
					}
					return nil
				}
			}
			return d.DialContext(ctx, network, address)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		host := req.URL.Host
		if req.URL.Scheme != "https" && !listed(p.Insecure, host) {
			return nil, &PolicyError{Registry: host, Why: "plain HTTP is used only for registries listed in builds.insecure_registries"}
		}
		if !p.listed(host) {
			req = req.WithContext(context.WithValue(req.Context(), publicOnly{}, true))
		}
		return base.RoundTrip(req)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
