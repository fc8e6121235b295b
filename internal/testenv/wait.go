package testenv

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Eventually polls cond every 100ms until it holds, failing the test with what it waited
// for when limit passes first.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HTTPGet returns the trimmed body of GET url, or "" when the request fails or answers
// anything but 200.
func HTTPGet(url string) string { return HTTPGetHost(url, "") }

// HTTPGetHost is HTTPGet with a Host header (a name a router routes by); "" keeps the URL's.
func HTTPGetHost(url, host string) string {
	c := http.Client{Timeout: 2 * time.Second}
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return ""
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}
