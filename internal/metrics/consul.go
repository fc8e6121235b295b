package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// Transport counts the requests an HTTP client (a Consul API client's) sends, by the API
// they reach (/v1/kv/... is kv), and those that fail: no answer (a canceled request
// excepted) or a status of 500 or above.
func (m *Metrics) Transport(base http.RoundTripper) http.RoundTripper {
	if m == nil {
		return base
	}
	return &countingTransport{base: base, m: m}
}

type countingTransport struct {
	base http.RoundTripper
	m    *Metrics
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	failed := err != nil && !errors.Is(err, context.Canceled) || resp != nil && resp.StatusCode >= 500
	t.m.ConsulRequest(consulAPI(req.URL.Path), failed)
	return resp, err
}

// consulAPI is the first segment after /v1/: kv, txn, health, catalog, agent, session, ...
func consulAPI(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return "other"
	}
	api, _, _ := strings.Cut(rest, "/")
	switch api {
	case "kv", "txn", "health", "catalog", "agent", "session", "status", "acl", "event", "coordinate":
		return api
	}
	return "other"
}

// CloseIdler lets a wrapped transport still close idle connections.
func (t *countingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
