package sync

import (
	"log/slog"
	"testing"
	"time"
)

// Before the forge's first listing a new pull request waits; after it, one the API does not
// list is closed; an API that fails lets pull requests through as git lists them.
func TestOpenPRsGate(t *testing.T) {
	o := newOpenPRs(nil, nil, slog.New(slog.DiscardHandler))
	if why, wait := o.allowed(1); why != "" || !wait {
		t.Fatalf("before any listing: %q, wait %v", why, wait)
	}
	o.open, o.fetched = map[int]bool{2: true}, time.Now().Add(time.Second)
	if why, wait := o.allowed(1); why == "" || wait {
		t.Fatalf("closed per the API: %q, wait %v", why, wait)
	}
	if why, wait := o.allowed(2); why != "" || wait {
		t.Fatalf("open per the API: %q, wait %v", why, wait)
	}
	// A ref seen after the last listing waits for the next one.
	o.fetched = time.Now().Add(-time.Minute)
	o.firstSeen[4] = time.Now()
	if _, wait := o.allowed(4); !wait {
		t.Fatal("a ref newer than the listing did not wait")
	}
	// The API fails: nothing is refused for it.
	o.failing = true
	if why, wait := o.allowed(4); why != "" || wait {
		t.Fatalf("API failing: %q, wait %v", why, wait)
	}
}
