package testenv

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Eventually polls cond every 100ms until it holds, failing the test with what it waited
// for when limit, times Patience, passes first. Its limits detect a failure; they are not
// targets (a target is measured and reported, or checked apart), so a slow machine only
// makes a failing test take longer to say so.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	limit = Patient(limit)
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WatchUntil checks cond every interval from now on, in the background, and sends the
// time it first held on the channel it returns: a figure measured from an event while the
// test goes on (or waits its turn after t.Parallel). It stops with the test.
func WatchUntil(t testing.TB, every time.Duration, cond func() bool) <-chan time.Time {
	at := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if cond() {
				at <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return at
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

// Patience multiplies the limits of Eventually: 3 unless $GILLIAM_PATIENCE says otherwise
// (1 for the limits as written). A loaded 2-core machine (the whole suite at once, a CI
// runner with neighbours) was measured 3-4 times slower than the same tests alone.
var Patience = patience()

func patience() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("GILLIAM_PATIENCE"), 64); err == nil && v > 0 {
		return v
	}
	return 3
}

// Patient is d times Patience.
func Patient(d time.Duration) time.Duration { return time.Duration(float64(d) * Patience) }
