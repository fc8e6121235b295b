package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Load sends GET requests to a URL, with a Host header, at a steady rate from StartLoad
// until Stop, and keeps what failed (a transport error or a status other than 200) and
// when. Its loop is bounded by Stop and each request by a 30s timeout.
type Load struct {
	mu       sync.Mutex
	sent     int
	failures []Failure
	answers  map[string]bool // the distinct bodies of successful answers
	stop     context.CancelFunc
	done     sync.WaitGroup
}

// Failure is one failed request: when it was sent and what went wrong.
type Failure struct {
	At   time.Time
	What string
}

// StartLoad starts sending perSecond requests a second to url with the Host header host.
func StartLoad(url, host string, perSecond int) *Load {
	l := &Load{answers: map[string]bool{}}
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	client := &http.Client{Timeout: 30 * time.Second}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				l.one(client, url, host)
			}()
		}
	}()
	return l
}

func (l *Load) one(client *http.Client, url, host string) {
	sent := time.Now()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	switch {
	case err != nil:
		l.failures = append(l.failures, Failure{At: sent, What: err.Error()})
	case resp.StatusCode != http.StatusOK:
		l.failures = append(l.failures, Failure{At: sent, What: fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))})
	default:
		l.answers[string(body)] = true
	}
}

// Counts says how many requests were sent and how many failed so far.
func (l *Load) Counts() (sent, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, len(l.failures)
}

// Failures are the failed requests so far, in the order they ended.
func (l *Load) Failures() []Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Failure(nil), l.failures...)
}

// Answered says whether a successful answer so far started with prefix.
func (l *Load) Answered(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for a := range l.answers {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

// Stop ends the load and waits for the requests in flight.
func (l *Load) Stop() {
	l.stop()
	l.done.Wait()
}
