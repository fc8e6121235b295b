package gitwatch

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/gilliam-sync/gilliam-sync/internal/fault"
)

// StalledError is a failure that waiting will not fix: credentials refused, an unknown or
// changed host key, a repository that is not there. A person must act; until then Run
// retries at its slowest pace only, so that a wrong password does not hammer the forge
// (some lock accounts after repeated failures).
type StalledError struct {
	// Reason says what a person should look at, in a few words.
	Reason string
	Err    error
}

func (e *StalledError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *StalledError) Unwrap() error { return e.Err }

// FaultKind: stalled, in the vocabulary gitwatch, build and sync share (internal/fault).
func (e *StalledError) FaultKind() fault.Kind { return fault.Stalled }

// FaultKind: a bad commit is stalled until a fixed one is pushed.
func (e *TreeError) FaultKind() fault.Kind { return fault.Stalled }

// Stalled reports whether err needs a person rather than another attempt: a
// *StalledError, or a *TreeError (a commit that cannot be checked out as it is).
func Stalled(err error) bool {
	var s *StalledError
	var t *TreeError
	return errors.As(err, &s) || errors.As(err, &t)
}

// TreeError is a commit that cannot be read or checked out as it is: an entry name that
// could leave the destination (.., /, \, .git, control characters), a link pointing out
// of the tree, a file or a checkout over its limit, a malformed tree. The same commit
// fails the same way every time: it is stalled until someone pushes a fixed one.
type TreeError struct {
	Repo   string // the repository's sanitized URL
	Commit string
	Path   string // slash-separated, from the folder exported or read
	Reason string
}

func (e *TreeError) Error() string {
	return fmt.Sprintf("%s at %s of %s: %s", quotePath(e.Path), short(e.Commit), e.Repo, e.Reason)
}

// quotePath shows a path as it is when it is plain, quoted when it holds anything a
// terminal or a log reader could misread (control characters, spaces, quotes).
func quotePath(p string) string {
	if q := strconv.Quote(p); q[1:len(q)-1] != p || strings.ContainsAny(p, " \t") {
		return q
	}
	return p
}

// ErrCacheUnreadable marks a read from a repository's cache that failed where a healthy
// cache would not (a missing or damaged object). It is retryable: the read marked the
// cache suspect, and the watcher's next poll checks it and re-clones it when it is
// corrupt; the same read then succeeds. errors.Is(err, ErrCacheUnreadable) tells it
// apart from a *TreeError (the commit itself is bad: stalled).
var ErrCacheUnreadable = errors.New("repository cache unreadable (checked and re-cloned at the next poll)")

// unreadable marks the cache suspect and wraps err with where and ErrCacheUnreadable.
func (r *Repo) unreadable(where string, err error) error {
	r.suspect.Store(true)
	return fmt.Errorf("%s: %w: %w", where, ErrCacheUnreadable, err)
}

// classify marks the transport failures that retrying cannot fix as stalled.
func classify(err error) error {
	var s *StalledError
	switch {
	case err == nil, errors.As(err, &s):
		return err
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		strings.Contains(err.Error(), "ssh: unable to authenticate"):
		return &StalledError{Reason: "credentials refused", Err: err}
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return &StalledError{Reason: "no such repository, or not visible with these credentials", Err: err}
	}
	return err
}

// Sanitize removes credentials from a repository URL, for logs, errors and events.
func Sanitize(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	u.User = nil
	return u.String()
}

// sanitizedError keeps credentials of a URL out of an error's text, whatever the libraries
// below put in it; errors.Is and errors.As still see the original.
type sanitizedError struct {
	msg string
	err error
}

func (e *sanitizedError) Error() string { return e.msg }
func (e *sanitizedError) Unwrap() error { return e.err }

// scrub returns err with the user information of rawURL (user:password, a token used as
// user name) removed from its text. Stalled errors stay stalled.
func scrub(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(rawURL)
	if perr != nil || u.User == nil {
		return err
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, rawURL, Sanitize(rawURL))
	msg = strings.ReplaceAll(msg, u.User.String()+"@", "")
	if p, ok := u.User.Password(); ok && p != "" {
		msg = strings.ReplaceAll(msg, p, "***")
	}
	if msg == err.Error() {
		return err
	}
	return &sanitizedError{msg: msg, err: err}
}
