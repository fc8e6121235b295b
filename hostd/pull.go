package hostd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/gilliam-sync/gilliam-sync/internal/metrics"
)

// puller gets images into the engine: one pull per image at a time however many instances
// wait for it, in the background so that a slow or failing registry holds up only the
// instances of that image, and retried with a capped backoff when it fails.
type puller struct {
	docker  Docker
	auth    map[string]RegistryCredential // by registry host
	backoff Backoff
	log     *slog.Logger
	done    func()           // called when a pull ends, to run a converge pass
	pulled  func(ref string) // called when a pull succeeds (nil: nothing)
	metrics *metrics.Metrics // counts pulls (nil: none)
	host    string

	wg     sync.WaitGroup
	mu     sync.Mutex
	images map[string]*imageState
}

type imageState struct {
	present  bool
	pulling  bool
	failures int
	err      error
	retryAt  time.Time
}

// pullStatus is where an image stands, for the instances that wait for it.
type pullStatus struct {
	Ready   bool
	Pulling bool
	Err     error     // the last pull's error, while it is retried
	RetryAt time.Time // when a failed pull is tried again
}

func newPuller(docker Docker, auth map[string]RegistryCredential, backoff Backoff, log *slog.Logger, done func()) *puller {
	return &puller{docker: docker, auth: auth, backoff: backoff, log: log, done: done, images: map[string]*imageState{}}
}

// ensure reports whether ref (pinned by digest) is in the engine; when it is not, it starts
// a pull unless one runs or a failed one waits out its backoff. The pull runs until ctx
// ends; done is called when it ends.
func (p *puller) ensure(ctx context.Context, ref string, now time.Time) pullStatus {
	p.mu.Lock()
	st := p.images[ref]
	if st == nil {
		st = &imageState{}
		p.images[ref] = st
	}
	s, decided := st.status(now)
	p.mu.Unlock()
	if decided {
		return s
	}

	// The engine may have it already (pulled before, by us or anyone): inspecting is cheap.
	if _, err := p.docker.ImageInspect(ctx, ref); err == nil {
		p.mu.Lock()
		st.present = true
		p.mu.Unlock()
		return pullStatus{Ready: true}
	} else if !errdefs.IsNotFound(err) {
		return pullStatus{Err: fmt.Errorf("inspect image %s: %w", ref, err)}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if s, decided := st.status(now); decided { // another caller got here first
		return s
	}
	st.pulling = true
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		start := time.Now()
		err := p.pull(ctx, ref)
		if ctx.Err() == nil {
			p.metrics.Pull(p.host, time.Since(start), err)
		}
		p.mu.Lock()
		st.pulling = false
		switch {
		case err == nil:
			if st.failures > 0 {
				p.log.Info("image pull recovered", "image", ref, "attempts", st.failures+1)
			}
			p.log.Info("image pulled", "image", ref, "took", time.Since(start).Round(time.Millisecond))
			st.present, st.failures, st.err = true, 0, nil
			if p.pulled != nil {
				defer p.pulled(ref) // after p.mu is released
			}
		case ctx.Err() != nil:
			// Stopping: the next daemon pulls again.
		default:
			st.failures++
			st.err = err
			st.retryAt = time.Now().Add(jitter(p.backoff.Delay(st.failures)))
			if st.failures == 1 {
				p.log.Warn("image pull failing", "image", ref, "err", err)
			}
		}
		p.mu.Unlock()
		p.done()
	}()
	return pullStatus{Pulling: true, Err: st.err}
}

// status is where an image stands, when that decides what to do: in the engine, being
// pulled, or waiting out the backoff of a failed pull.
func (st *imageState) status(now time.Time) (pullStatus, bool) {
	switch {
	case st.present:
		return pullStatus{Ready: true}, true
	case st.pulling:
		return pullStatus{Pulling: true, Err: st.err}, true
	case now.Before(st.retryAt):
		return pullStatus{Err: st.err, RetryAt: st.retryAt}, true
	}
	return pullStatus{}, false
}

// forget drops what is known of ref: the engine lost it (someone removed the image), and
// the next ensure inspects and pulls again.
func (p *puller) forget(ref string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.images[ref]; st != nil && !st.pulling {
		delete(p.images, ref)
	}
}

// retain forgets the images not in keep, except those being pulled.
func (p *puller) retain(keep map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ref, st := range p.images {
		if !keep[ref] && !st.pulling {
			delete(p.images, ref)
		}
	}
}

// wait waits for the pulls in flight (their ctx ended).
func (p *puller) wait() { p.wg.Wait() }

func (p *puller) pull(ctx context.Context, ref string) error {
	opts := image.PullOptions{}
	host := registryHost(ref)
	if cred, ok := p.auth[host]; ok {
		// The engine sends it when the registry challenges (X-Registry-Auth).
		enc, err := registry.EncodeAuthConfig(registry.AuthConfig{Username: cred.Username, Password: cred.Password, ServerAddress: host})
		if err != nil {
			return fmt.Errorf("pull %s: encode credentials: %w", ref, err)
		}
		opts.RegistryAuth = enc
	}
	rc, err := p.docker.ImagePull(ctx, ref, opts)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	// The engine reports a failure inside the stream, as a message with an error.
	if err := jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	return nil
}

// RegistryCredential is what the host daemon pulls from one registry with: a read-only
// credential is enough.
type RegistryCredential struct {
	Username, Password string
}

// LoadRegistryAuth reads registry credentials from a Docker client config.json (the
// "auths" section, as `docker login` writes it and `gilliam-sync up` writes the pull
// credential), by registry host.
func LoadRegistryAuth(path string) (map[string]RegistryCredential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("registry credentials %s: %w", path, err)
	}
	out := map[string]RegistryCredential{}
	for host, a := range cfg.Auths {
		c := RegistryCredential{Username: a.Username, Password: a.Password}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				// Never the value itself in an error: it is a secret.
				return nil, fmt.Errorf("registry credentials %s: the auth of %s is not base64 of user:password", path, host)
			}
			c = RegistryCredential{Username: user, Password: pass}
		}
		host = strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
		out[strings.TrimSuffix(host, "/")] = c
	}
	return out, nil
}

// registryHost is the registry part of an image reference: its first component when that
// looks like a host (a dot, a port or localhost), else Docker Hub.
func registryHost(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}
