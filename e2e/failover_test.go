package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gilliam-sync/gilliam-sync/internal/testenv"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// Two sync daemons; the leader is killed with -9 in the middle of a deploy, after the
// releases and the desired state are written and before any assignment is. The standby
// takes over and finishes the deploy without building again, and the end state is the one
// a deploy without the kill reaches.
func TestLeaderKilledMidDeploy(t *testing.T) {
	parallel(t, 23*time.Second)
	c := newCluster(t)
	host := c.host("h")
	const f = "failover" // the hello example, named for this test
	commit := c.repo.CommitDir(helloAs(t, f), "", "hello")

	a := c.sync("a", []string{"GILLIAM_FAILPOINT=pause:after-desired"})
	a.WaitLog(30*time.Second, "leading", "id=a")
	b := c.sync("b", nil)
	a.WaitLog(5*time.Minute, "failpoint: paused", "stage=after-desired")

	// The leader stopped where we wanted it: releases and desired state written, no
	// assignment yet.
	ctx := context.Background()
	d, _, err := c.store.Desired(ctx, f)
	if err != nil || d == nil || d.Services["web"].Latest == "" {
		t.Fatalf("desired state at the failpoint: %+v %v", d, err)
	}
	if n := len(c.assigned()); n != 0 {
		t.Fatalf("%d instances assigned before the failpoint", n)
	}
	if len(b.Logs("leading")) != 0 {
		t.Fatal("the standby leads while the leader lives")
	}

	killed := time.Now()
	a.Kill()
	took := b.WaitLog(60*time.Second, "leading", "id=b").Time.Sub(killed)
	b.WaitLog(30*time.Second, "assignments written")
	testenv.Eventually(t, 60*time.Second, "2 passing instances", func() bool { return len(c.passing(f+"-web")) == 2 })
	serving := time.Since(killed)

	// Nothing was built twice: the leader built; its releases, desired state and record
	// of the commit were written in one transaction, so the new leader has no image to
	// look for: it only places. Counted twice over: the builds the daemons logged, and the
	// images the registry was sent.
	builtA, builtB := len(a.Logs("building")), len(b.Logs("building"))
	pushed := c.reg.Pushes(f + "/web")
	if builtA+builtB != 1 || pushed != 1 {
		t.Fatalf("%d builds across both daemons (%d by the leader, %d by the standby), %d images pushed to %s/web; want 1 and 1", builtA+builtB, builtA, builtB, pushed, f)
	}
	if n := len(b.Logs("desired state written")); n != 0 {
		t.Fatalf("the new leader deployed the commit again (%d times)", n)
	}

	// The end state is the one a deploy without the kill reaches: one release, naming the
	// commit; instances 0 and 1 of it, on the one host.
	rels, err := c.store.Releases(ctx, f)
	if err != nil || len(rels) != 1 || rels[0].Commit != commit {
		t.Fatalf("releases: %+v %v", rels, err)
	}
	want := []string{state.InstanceID(f, "web", rels[0].ID, 0), state.InstanceID(f, "web", rels[0].ID, 1)}
	var got []string
	for id, h := range c.assigned() {
		if h != host {
			t.Errorf("%s on %s, want %s", id, h, host)
		}
		got = append(got, id)
	}
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("assigned %v, want %v", got, want)
	}
	testenv.Report(t, "e2e-leader-failover", strings.Join([]string{
		"sync leader killed with -9 between desired state and assignments (lock TTL 10s, lock delay 1s):",
		fmt.Sprintf("  standby leading after      %s", took.Round(time.Millisecond)),
		fmt.Sprintf("  instances serving after    %s", serving.Round(time.Millisecond)),
		fmt.Sprintf("  builds across both daemons %d (leader %d, standby %d; images pushed to the registry %d)", builtA+builtB, builtA, builtB, pushed),
	}, "\n"))
}
