package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gilliam-sync/gilliam-sync/state"
)

// historyView is what `releases --history --output json` prints: the events, and the deploy
// timeline of each release.
type historyView struct {
	Events   []state.Event    `json:"events"`
	Timeline []state.Timeline `json:"timeline"`
}

// latestTimeline is the newest timeline entry of a service, or nil.
func latestTimeline(tl []state.Timeline, service string) *state.Timeline {
	for i := len(tl) - 1; i >= 0; i-- {
		if tl[i].Service == service {
			t := tl[i]
			return &t
		}
	}
	return nil
}

// timelineText says a release's way to serving in one line: when it was detected, then
// the time each step took, then the total.
func timelineText(t state.Timeline) string {
	var parts []string
	prev := t.Detected
	step := func(name string, at time.Time) {
		if at.IsZero() {
			return
		}
		if prev.IsZero() {
			parts = append(parts, name+" "+at.Local().Format("15:04:05.000"))
		} else {
			parts = append(parts, fmt.Sprintf("%s +%s", name, at.Sub(prev).Round(time.Millisecond)))
		}
		prev = at
	}
	if !t.Detected.IsZero() {
		parts = append(parts, "detected "+t.Detected.Local().Format("2006-01-02 15:04:05.000"))
	}
	step("build started", t.BuildStarted)
	step("built", t.Built)
	step("released", t.Released)
	step("first instance passing", t.FirstPassing)
	done := "roll-out done"
	if t.Result != "" && t.Result != "done" {
		done = t.Result
	}
	step(done, t.RolloutDone)
	switch {
	case t.Result == "done" && !t.Detected.IsZero():
		parts = append(parts, fmt.Sprintf("serving %s after %s", t.Cause, t.RolloutDone.Sub(t.Detected).Round(time.Millisecond)))
	case t.Result == "":
		parts = append(parts, "on its way")
	}
	return strings.Join(parts, ", ")
}

// printTimeline prints the deploy timeline of each release, one release a line.
func printTimeline(w io.Writer, tl []state.Timeline) {
	if len(tl) == 0 {
		return
	}
	fmt.Fprintln(w, "\ndeploy timeline:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tSERVICE\tCOMMIT\tCAUSE\tDETECTED\tBUILD\tBUILT\tRELEASED\tFIRST PASSING\tROLLED OUT\tRESULT\tTOTAL")
	for _, t := range tl {
		total := "-"
		if t.Result == "done" && !t.Detected.IsZero() {
			total = t.RolloutDone.Sub(t.Detected).Round(time.Millisecond).String()
		}
		result := t.Result
		if result == "" {
			result = "on its way"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(t.Release), t.Service, orDash(short(t.Commit)), orDash(t.Cause),
			clock(t.Detected), since(t.Detected, t.BuildStarted), since(t.BuildStarted, t.Built), since(t.Built, t.Released),
			since(t.Released, t.FirstPassing), since(t.FirstPassing, t.RolloutDone), result, total)
	}
	tw.Flush()
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

// since is the step from a to b, as +duration; "-" when b did not happen.
func since(a, b time.Time) string {
	switch {
	case b.IsZero():
		return "-"
	case a.IsZero():
		return b.Local().Format("15:04:05.000")
	}
	return "+" + b.Sub(a).Round(time.Millisecond).String()
}
