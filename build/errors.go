package build

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// What an error from Build means for its caller (in the words of internal/fault, which
// sync's planner reads through fault.KindOf):
//
//   - *FailedError: the build ran and failed (a compile error, no buildpack recognised the
//     code, a RUN step that exits non-zero, a timeout). Building the same source again
//     fails the same way: the commit is stalled until a person pushes a fix, and what runs
//     keeps running.
//   - ErrSuperseded: a newer request for the same service replaced this one before it
//     started; the newer one carries on, this one has nothing left to do.
//   - anything else (the registry or the Docker engine away, the context ended): nothing
//     is wrong with the code; retry later.

// ErrSuperseded is returned to a request whose build had not started when a newer request
// for the same service (a newer commit) arrived: only the newest is built.
var ErrSuperseded = fault.Supersede(errors.New("superseded by a newer build of the service"))

// FailedError is a build that ran and failed. Tail holds the last lines of its log, where
// a compiler or a Dockerfile step says what is wrong.
type FailedError struct {
	Formation, Service, Commit string
	// Reason is what ended the build: "exit status 51", "timed out after 15m0s", the
	// Dockerfile step that failed.
	Reason string
	// Log is the path of the full build log; Tail its last lines.
	Log, Tail string
}

// FaultKind: a failed build is stalled until a person pushes a fix.
func (e *FailedError) FaultKind() fault.Kind { return fault.Stalled }

func (e *FailedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "build of %s/%s", e.Formation, e.Service)
	if e.Commit != "" {
		fmt.Fprintf(&b, " at %s", short(e.Commit))
	}
	fmt.Fprintf(&b, " failed: %s", e.Reason)
	if e.Tail != "" {
		fmt.Fprintf(&b, "\nbuild log (end, full log in %s):\n%s", e.Log, strings.TrimRight(e.Tail, "\n"))
	}
	return b.String()
}

// short is the abbreviated form of a commit or tree hash, for messages and file names.
func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
