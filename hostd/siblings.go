package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gilliam-sync/gilliam-sync/internal/follow"
	"github.com/gilliam-sync/gilliam-sync/internal/names"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Meta keys of an instance's registration the sibling proxies read: its address on its
// formation's network, and where its host's mesh listener answers.
const (
	MetaIP   = "ip"
	MetaMesh = "mesh"
)

// localInstance is a running instance of this host as the mesh listener may reach it.
type localInstance struct {
	IP    string
	Ports []int
}

// registrationOf is an instance's registration: an internal service's at its address on
// its formation's network (its ports are published nowhere), the others' at the advertise
// address; all with the meta the sibling proxies reach them by.
func (d *Daemon) registrationOf(inst state.Instance, rel *state.Release, c observed) *api.AgentServiceRegistration {
	addr, port := d.cfg.Advertise, primaryPort(rel, c)
	if rel.Internal && c.IP != "" && len(rel.Ports) > 0 {
		addr, port = c.IP, rel.Ports[0].Port
	}
	reg := registration(d.store.Installation(), d.cfg.ID, addr, inst, rel, port, d.cfg.DeregisterAfter)
	if c.IP != "" {
		reg.Meta[MetaIP] = c.IP
		if m := d.mesh.Load(); m != nil {
			reg.Meta[MetaMesh] = m.addr
		}
		reg = sealed(reg)
	}
	return reg
}

// networking brings the networking of the host to the pass's outcome: the instances the
// mesh listener may reach, the sibling proxy's listeners, and the networks no formation
// needs any more.
func (d *Daemon) networking(ctx context.Context, a *state.Assignment, containers []observed, p *pass) {
	byID := make(map[string]state.Instance, len(a.Instances))
	keep := map[string]bool{}
	for _, inst := range a.Instances {
		byID[inst.ID] = inst
		keep[inst.Formation] = true
	}
	local := map[string]localInstance{}
	specs := map[listenKey]listenSpec{}
	for id, c := range p.running {
		inst, ok := byID[id]
		rel := p.releases[inst.Release]
		if !ok || rel == nil || c.IP == "" {
			continue
		}
		li := localInstance{IP: c.IP}
		for _, port := range rel.Ports {
			li.Ports = append(li.Ports, port.Port)
		}
		local[id] = li
		n, err := d.network(ctx, inst.Formation)
		if err != nil {
			p.fail(err)
			continue
		}
		addSiblings(specs, inst.Formation, rel, n)
	}
	// A release phase's task reaches its siblings too (a migration talks to the store),
	// before any instance of its release runs.
	for _, t := range a.Tasks {
		rel, err := d.release(ctx, t.Formation, t.Release)
		if err != nil {
			continue // the task waits for its release as well
		}
		keep[t.Formation] = true
		n, err := d.network(ctx, t.Formation)
		if err != nil {
			p.fail(err)
			continue
		}
		addSiblings(specs, t.Formation, rel, n)
	}
	d.local.Store(&local)
	d.proxy.sync(specs)
	for _, c := range containers {
		if inst, ok := byID[c.Instance]; ok {
			keep[inst.Formation] = true
		}
	}
	d.netMu.Lock()
	stale := p.now.Sub(d.netsSwept) >= netSweepEvery
	for f := range d.nets {
		stale = stale || !keep[f]
	}
	if stale {
		d.netsSwept = p.now
	}
	d.netMu.Unlock()
	if stale {
		d.pruneNetworks(ctx, keep)
	}
}

// netSweepEvery is how often a host daemon checks all its formation networks against its
// assignment, besides whenever one it created is no longer needed: at its start, a network
// left while it was down goes, and one it could not remove then (a container still on it)
// goes later.
const netSweepEvery = 5 * time.Minute

// addSiblings adds to specs a listener on formation's network for each port of each
// sibling rel names.
func addSiblings(specs map[listenKey]listenSpec, formation string, rel *state.Release, n formationNet) {
	for _, s := range rel.Siblings {
		for _, sp := range s.Ports {
			specs[listenKey{formation, sp.Listen}] = listenSpec{
				service: state.ServiceName(formation, s.Service), port: sp.Port, net: n}
		}
	}
}

// listenKey is one listener of the sibling proxy: a formation's network, a port.
type listenKey struct {
	formation string
	port      int
}

// listenSpec is where a listener's connections go: an instance of the Consul service, on
// its container port.
type listenSpec struct {
	service string
	port    int
	net     formationNet
}

func (s listenSpec) same(o listenSpec) bool {
	return s.service == o.service && s.port == o.port && s.net.Name == o.net.Name && s.net.Gateway.Equal(o.net.Gateway)
}

// siblingProxy is the host-local TCP proxy through which instances reach their
// siblings: a listener on each formation network's gateway per sibling port, answering
// only that network's containers, and for each sibling service a blocking query on its
// passing instances. A connection goes to one of them (round robin): on this host
// straight to its container, elsewhere through that host's mesh listener. Connections in
// progress are never cut when the catalog changes: an instance leaving it (drained)
// finishes them.
type siblingProxy struct {
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[listenKey]*siblingListener
	services  map[string]*upstreams
	warned    map[listenKey]bool
}

type siblingListener struct {
	spec listenSpec
	ln   net.Listener
}

// upstreams are a sibling service's passing instances, as its blocking query last saw.
type upstreams struct {
	cancel context.CancelFunc
	list   atomic.Pointer[[]upstream]
	ready  chan struct{} // closed at the first answer
	once   sync.Once
	next   atomic.Uint64
}

type upstream struct {
	Instance, Host, IP, Mesh string
}

func newSiblingProxy(d *Daemon) *siblingProxy {
	ctx, cancel := context.WithCancel(context.Background())
	return &siblingProxy{d: d, ctx: ctx, cancel: cancel, listeners: map[listenKey]*siblingListener{},
		services: map[string]*upstreams{}, warned: map[listenKey]bool{}}
}

// close stops the listeners and the queries; connections in progress go on.
func (p *siblingProxy) close() {
	p.sync(nil)
	p.cancel()
}

// sync makes the listeners those of specs, and follows the services they need.
func (p *siblingProxy) sync(specs map[listenKey]listenSpec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.listeners {
		if s, ok := specs[k]; !ok || !s.same(l.spec) {
			l.ln.Close()
			delete(p.listeners, k)
		}
	}
	needed := map[string]bool{}
	for k, s := range specs {
		needed[s.service] = true
		if _, ok := p.listeners[k]; ok {
			continue
		}
		addr := net.JoinHostPort(s.net.Gateway.String(), strconv.Itoa(k.port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if !p.warned[k] {
				p.d.log.Warn("sibling proxy: cannot listen", "formation", k.formation, "service", s.service, "addr", addr, "err", err)
				p.warned[k] = true
			}
			continue
		}
		delete(p.warned, k)
		l := &siblingListener{spec: s, ln: ln}
		p.listeners[k] = l
		go p.serve(l)
	}
	for name, u := range p.services {
		if !needed[name] {
			u.cancel()
			delete(p.services, name)
		}
	}
	for name := range needed {
		if _, ok := p.services[name]; !ok {
			p.services[name] = p.follow(name)
		}
	}
}

// follow starts a blocking query on a service's passing instances.
func (p *siblingProxy) follow(service string) *upstreams {
	ctx, cancel := context.WithCancel(p.ctx)
	u := &upstreams{cancel: cancel, ready: make(chan struct{})}
	d := p.d
	f := &follow.Follower{
		Name: "siblings " + service, Wait: d.cfg.WatchWait, StaleAfter: d.cfg.ConsulTimeout, MinDelay: 20 * time.Millisecond,
		Log: d.log,
		Fetch: func(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
			q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
			entries, meta, err := d.store.Client().Health().Service(service, TagInstance, true, q)
			if err != nil {
				return 0, err
			}
			list := make([]upstream, 0, len(entries))
			for _, e := range entries {
				m := e.Service.Meta
				if names.InstallationOfTags(e.Service.Tags) != d.store.Installation() {
					continue // another installation on the same Consul may run a formation of this name
				}
				if m[MetaIP] == "" {
					continue // registered before it had a formation network: unreachable by name
				}
				list = append(list, upstream{Instance: m["instance"], Host: m["host"], IP: m[MetaIP], Mesh: m[MetaMesh]})
			}
			u.list.Store(&list)
			u.once.Do(func() { close(u.ready) })
			return meta.LastIndex, nil
		},
		Changed: func() {},
	}
	go f.Run(ctx)
	return u
}

func (p *siblingProxy) serve(l *siblingListener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.d.log.Warn("sibling proxy: accept", "err", err)
			}
			return
		}
		go p.handle(l.spec, c)
	}
}

func (p *siblingProxy) handle(spec listenSpec, c net.Conn) {
	defer c.Close()
	if a, ok := c.RemoteAddr().(*net.TCPAddr); !ok || !spec.net.contains(a.IP) {
		p.d.log.Debug("sibling proxy: refused a connection from outside the formation", "from", c.RemoteAddr().String(), "service", spec.service)
		return
	}
	up, err := p.dial(spec)
	if err != nil {
		p.d.log.Debug("sibling proxy: no instance answered", "service", spec.service, "err", err)
		return
	}
	defer up.Close()
	splice(c, up)
}

// maxTries is how many instances a connection is tried on before it is given up.
const maxTries = 3

// dial connects to a passing instance of spec's service, the next in turn, and to others
// when it does not answer.
func (p *siblingProxy) dial(spec listenSpec) (net.Conn, error) {
	p.mu.Lock()
	u := p.services[spec.service]
	p.mu.Unlock()
	if u == nil {
		return nil, fmt.Errorf("%s not followed", spec.service)
	}
	select {
	case <-u.ready:
	case <-time.After(2 * time.Second):
		return nil, fmt.Errorf("%s: Consul has not answered yet", spec.service)
	}
	list := *u.list.Load()
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: no passing instance", spec.service)
	}
	start := u.next.Add(1)
	var errs []error
	for i := range min(len(list), maxTries) {
		in := list[(start+uint64(i))%uint64(len(list))]
		var c net.Conn
		var err error
		if in.Host == p.d.cfg.ID {
			c, err = net.DialTimeout("tcp", net.JoinHostPort(in.IP, strconv.Itoa(spec.port)), 2*time.Second)
		} else {
			c, err = p.d.mesh.Load().dial(in.Mesh, in.Instance, spec.port)
		}
		if err == nil {
			return c, nil
		}
		p.d.log.Debug("sibling proxy: instance did not answer", "service", spec.service, "instance", in.Instance, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", in.Instance, err))
	}
	return nil, errors.Join(errs...)
}

// splice copies both ways until both are done, passing each side's end of writing on.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
