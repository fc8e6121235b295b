package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gilliam-sync/gilliam-sync/gitwatch"
	"github.com/gilliam-sync/gilliam-sync/internal/seal"
	"github.com/gilliam-sync/gilliam-sync/state"
)

// The commands that change a formation by hand: rollback, unpin, scale and env. Each
// writes the desired state (or the config vars) in Consul with check-and-set; the leading
// sync daemon takes it from there on its next pass, so they never fight it.

var rollbackCmd = &command{
	name:    "rollback",
	usage:   "FORMATION [SERVICE] [--to RELEASE]",
	summary: "go back to an earlier release and pin it: new commits build but do not deploy until unpin",
	run:     runRollback,
}

var unpinCmd = &command{
	name:    "unpin",
	usage:   "FORMATION [SERVICE]",
	summary: "lift a rollback's pin: the latest release rolls out again",
	run:     runUnpin,
}

var scaleCmd = &command{
	name:    "scale",
	usage:   "FORMATION SERVICE=N...",
	summary: "set services' scale; it holds until the scale in gilliam.yml changes",
	run:     runScale,
}

var envCmd = &command{
	name:    "env",
	usage:   "set FORMATION KEY - | set FORMATION KEY --from-file FILE | set FORMATION KEY=VALUE... | unset FORMATION KEY... | list FORMATION [--reveal --key-file F]",
	summary: "config vars (secrets: sealed in Consul) merged over gilliam.yml's env into new releases",
	run:     runEnv,
}

// manageCommand wraps the common part: parse, open the store, report errors.
func manageCommand(name string, fs *flag.FlagSet, args []string, stderr io.Writer, do func(ctx context.Context, st *state.Store, args []string) error) func(ctx context.Context) int {
	newStore := consulFlags(fs)
	return func(ctx context.Context) int {
		positional, err := parseArgs(fs, args)
		if err != nil {
			return flagExit(err)
		}
		st, err := newStore()
		if err == nil {
			err = do(ctx, st, positional)
		}
		var usage usageError
		switch {
		case errors.As(err, &usage):
			fmt.Fprintf(stderr, "gilliam-sync %s: %v\n", name, err)
			fs.Usage()
			return 2
		case err != nil:
			fmt.Fprintf(stderr, "gilliam-sync %s: %v\n", name, err)
			return 1
		}
		return 0
	}
}

// usageError is a mistake in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// services returns the services a command applies to: the one named, or all of them.
func services(d *state.Desired, only string) ([]string, error) {
	if only != "" {
		if _, ok := d.Services[only]; !ok {
			return nil, fmt.Errorf("formation %s has no service %q (it has %s)", d.Formation, only, strings.Join(serviceNames(d), ", "))
		}
		return []string{only}, nil
	}
	return serviceNames(d), nil
}

func serviceNames(d *state.Desired) []string {
	names := make([]string, 0, len(d.Services))
	for n := range d.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// existing reads a formation's desired state, failing when there is none.
func existing(ctx context.Context, st *state.Store, formation string) (*state.Desired, error) {
	d, _, err := st.Desired(ctx, formation)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("no formation %q in Consul", formation)
	}
	return d, nil
}

// formationArgs reads FORMATION [SERVICE] and returns the formation's desired state and the
// services the command applies to: the one named, or all.
func formationArgs(ctx context.Context, st *state.Store, args []string) (*state.Desired, []string, error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, nil, usageError{"want FORMATION [SERVICE]"}
	}
	d, err := existing(ctx, st, args[0])
	if err != nil {
		return nil, nil, err
	}
	only := ""
	if len(args) == 2 {
		only = args[1]
	}
	names, err := services(d, only)
	return d, names, err
}

func runRollback(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	to := fs.String("to", "", "release to go back to (an id or a prefix of one; default: the one before what runs)")
	return manageCommand("rollback", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		d, names, err := formationArgs(ctx, st, args)
		if err != nil {
			return err
		}
		formation := d.Formation
		if *to != "" && len(names) != 1 {
			return usageError{"--to names one release: name the SERVICE too"}
		}
		releases, err := st.Releases(ctx, formation)
		if err != nil {
			return err
		}
		pins := map[string]string{}
		for _, name := range names {
			rel, err := rollbackTarget(releases, name, d.Services[name], *to)
			if err != nil {
				return err
			}
			pins[name] = rel
		}
		now := time.Now().UTC()
		_, err = st.UpdateDesired(ctx, formation, func(d *state.Desired) error {
			for name, rel := range pins {
				ds := d.Services[name]
				ds.Pin = &state.Pin{Release: rel, Since: now}
				d.Services[name] = ds
			}
			return nil
		})
		if err != nil {
			return err
		}
		var events []state.Event
		for _, name := range names {
			fmt.Fprintf(stdout, "%s/%s: rolling back to release %s, pinned (gilliam-sync unpin %s %s to resume)\n", formation, name, short(pins[name]), formation, name)
			events = append(events, state.Event{Time: now, Service: name, Release: pins[name], What: "rollback to " + short(pins[name]) + ", pinned"})
		}
		return st.AddEvents(ctx, formation, events...)
	})(ctx)
}

// rollbackTarget picks the release a service goes back to: the one --to names (an id or
// an unambiguous prefix), else the newest release older than the one it runs.
func rollbackTarget(releases []*state.Release, service string, ds state.DesiredService, to string) (string, error) {
	var mine []*state.Release // newest first
	for _, r := range releases {
		if r.Service == service {
			mine = append(mine, r)
		}
	}
	if to != "" {
		var match []string
		for _, r := range mine {
			if strings.HasPrefix(r.ID, to) {
				match = append(match, r.ID)
			}
		}
		switch len(match) {
		case 0:
			return "", fmt.Errorf("service %s has no release %q (gilliam-sync releases lists them)", service, to)
		case 1:
			return match[0], nil
		}
		return "", fmt.Errorf("release %q is ambiguous for service %s: %s", to, service, strings.Join(match, ", "))
	}
	current := ds.Target()
	for i, r := range mine {
		if r.ID == current && i+1 < len(mine) {
			return mine[i+1].ID, nil
		}
	}
	return "", fmt.Errorf("service %s has no release older than %s to go back to", service, short(current))
}

func runUnpin(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	return manageCommand("unpin", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		d, names, err := formationArgs(ctx, st, args)
		if err != nil {
			return err
		}
		formation := d.Formation
		var unpinned []string
		_, err = st.UpdateDesired(ctx, formation, func(d *state.Desired) error {
			unpinned = unpinned[:0]
			for _, name := range names {
				ds := d.Services[name]
				if ds.Pin != nil {
					ds.Pin = nil
					ds.LatestCause = "unpin"
					d.Services[name] = ds
					unpinned = append(unpinned, name)
				}
			}
			if len(unpinned) == 0 {
				return state.ErrNoChange
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(unpinned) == 0 {
			fmt.Fprintf(stdout, "%s: nothing was pinned\n", formation)
			return nil
		}
		var events []state.Event
		for _, name := range unpinned {
			fmt.Fprintf(stdout, "%s/%s: unpinned; the latest release rolls out\n", formation, name)
			events = append(events, state.Event{Time: time.Now().UTC(), Service: name, What: "unpinned"})
		}
		return st.AddEvents(ctx, formation, events...)
	})(ctx)
}

func runScale(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	return manageCommand("scale", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		if len(args) < 2 {
			return usageError{"want FORMATION SERVICE=N..."}
		}
		formation := args[0]
		scales := map[string]int{}
		for _, a := range args[1:] {
			name, n, ok := strings.Cut(a, "=")
			scale, err := strconv.Atoi(n)
			if !ok || err != nil || scale < 0 || scale > 1000 {
				return usageError{fmt.Sprintf("%q: want SERVICE=N with N from 0 to 1000", a)}
			}
			scales[name] = scale
		}
		d, err := existing(ctx, st, formation)
		if err != nil {
			return err
		}
		for name := range scales {
			if _, err := services(d, name); err != nil {
				return err
			}
		}
		_, err = st.UpdateDesired(ctx, formation, func(d *state.Desired) error {
			for name, n := range scales {
				ds := d.Services[name]
				ds.ScaleOverride = &n
				d.Services[name] = ds
			}
			return nil
		})
		if err != nil {
			return err
		}
		var events []state.Event
		for _, name := range sortedKeys(scales) {
			fmt.Fprintf(stdout, "%s/%s: scale %d (holds until gilliam.yml's scale for it changes)\n", formation, name, scales[name])
			events = append(events, state.Event{Time: time.Now().UTC(), Service: name, What: fmt.Sprintf("scaled to %d by hand", scales[name])})
		}
		return st.AddEvents(ctx, formation, events...)
	})(ctx)
}

// envName is what a config var may be called: what a shell and gilliam.yml accept.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func runEnv(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	reveal := fs.Bool("reveal", false, "list: print values, opened with the root key (they are secrets: by default only names are shown)")
	fromFile := fs.String("from-file", "", "set: the value of the one KEY named is this file's content (a final newline dropped)")
	keySrc := rootKeyFlag(fs, ": list --reveal opens values with it")
	return manageCommand("env", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		if len(args) < 2 {
			return usageError{"want set|unset|list FORMATION ..."}
		}
		verb, formation, rest := args[0], args[1], args[2:]
		switch verb {
		case "list":
			c, _, err := st.Config(ctx, formation)
			if err != nil {
				return err
			}
			if len(c) == 0 {
				fmt.Fprintf(stdout, "%s: no config vars\n", formation)
			}
			var root *seal.Key
			if *reveal {
				if root, _, err = keySrc.load(""); err != nil {
					return fmt.Errorf("--reveal: %w", err)
				}
			}
			for _, k := range sortedKeys(c) {
				v := redacted
				if root != nil {
					plain, err := root.Open(c[k])
					if err != nil {
						return fmt.Errorf("config var %s: %w", k, err)
					}
					v = string(plain)
				}
				fmt.Fprintf(stdout, "%s=%s\n", k, v)
			}
			return nil
		case "set", "unset":
		default:
			return usageError{fmt.Sprintf("unknown env verb %q: want set, unset or list", verb)}
		}
		if len(rest) == 0 {
			return usageError{"name at least one variable"}
		}
		set, err := envValues(verb, rest, *fromFile, stdin)
		if err != nil {
			return err
		}
		if verb == "set" {
			// Sealed here, to the installation's root key: Consul never sees a value.
			rk, _, err := st.RootKey(ctx)
			if err != nil {
				return err
			}
			if rk == nil {
				return errors.New("the installation has no root key yet: start a sync daemon (it publishes the key when it first leads), then set config vars")
			}
			pub, err := seal.ParsePublic(rk.Public)
			if err != nil {
				return fmt.Errorf("root key in Consul: %w", err)
			}
			for k, v := range set {
				if set[k], err = seal.Seal(pub, []byte(v)); err != nil {
					return err
				}
			}
		}
		err = st.UpdateConfig(ctx, formation, func(c map[string]string) {
			for k, v := range set {
				if verb == "set" {
					c[k] = v
				} else {
					delete(c, k)
				}
			}
		})
		if err != nil {
			return err
		}
		names := sortedKeys(set)
		fmt.Fprintf(stdout, "%s: %s %s; new releases roll out\n", formation, verb, strings.Join(names, ", "))
		return st.AddEvents(ctx, formation, state.Event{Time: time.Now().UTC(), What: "config " + verb + " " + strings.Join(names, ", ")})
	})(ctx)
}

// envValues reads what env set or unset is given: KEY=VALUE pairs, or one KEY whose value
// is read from stdin ("-") or a file (--from-file), so that it is never on a command line
// (ps, shell history). A value read is taken whole but for one final newline.
func envValues(verb string, rest []string, fromFile string, stdin io.Reader) (map[string]string, error) {
	set := map[string]string{}
	check := func(k string) error {
		if !envName.MatchString(k) {
			return usageError{fmt.Sprintf("%q is not a valid variable name", k)}
		}
		return nil
	}
	read := func(k string, r io.Reader, from string) (map[string]string, error) {
		if err := check(k); err != nil {
			return nil, err
		}
		b, err := io.ReadAll(io.LimitReader(r, maxConfigValue+1))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", from, err)
		}
		if len(b) > maxConfigValue {
			return nil, fmt.Errorf("%s: a config var's value is at most %d bytes", from, maxConfigValue)
		}
		b = bytes.TrimSuffix(b, []byte("\n"))
		return map[string]string{k: string(b)}, nil
	}
	switch {
	case verb == "set" && fromFile != "":
		if len(rest) != 1 || strings.Contains(rest[0], "=") {
			return nil, usageError{"--from-file sets one variable: env set FORMATION KEY --from-file FILE"}
		}
		f, err := os.Open(fromFile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return read(rest[0], f, fromFile)
	case verb == "set" && len(rest) == 2 && rest[1] == "-":
		return read(rest[0], stdin, "stdin")
	}
	for _, a := range rest {
		k, v, ok := strings.Cut(a, "=")
		if verb == "set" && !ok {
			return nil, usageError{fmt.Sprintf("%q: want KEY=VALUE, KEY - (the value from stdin) or KEY --from-file FILE", a)}
		}
		if err := check(k); err != nil {
			return nil, err
		}
		set[k] = v
	}
	return set, nil
}

// maxConfigValue bounds one config var's value (Consul's values are at most 512 KiB, and
// a formation's config vars share one).
const maxConfigValue = 64 << 10

// stdin is where env set reads a value given as "-" (tests replace it).
var stdin io.Reader = os.Stdin

// redacted stands for a secret's value wherever it would be shown.
const redacted = "<redacted>"

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var canaryCmd = &command{
	name:    "canary",
	usage:   "FORMATION SERVICE --release RELEASE [--scale N] | promote FORMATION SERVICE | abort FORMATION SERVICE",
	summary: "run a release at a small scale beside what runs, until promoted (it rolls out) or aborted",
	run:     runCanary,
}

func runCanary(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	release := fs.String("release", "", "the release to run as a canary (an id or a prefix of one)")
	scale := fs.Int("scale", 1, "how many instances of it run beside the service's own")
	return manageCommand("canary", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		verb := "start"
		if len(args) > 0 && (args[0] == "promote" || args[0] == "abort") {
			verb, args = args[0], args[1:]
		}
		if len(args) != 2 {
			return usageError{"want FORMATION SERVICE --release R, or promote|abort FORMATION SERVICE"}
		}
		d, err := existing(ctx, st, args[0])
		if err != nil {
			return err
		}
		formation, service := args[0], args[1]
		if _, err := services(d, service); err != nil {
			return err
		}
		var what string
		switch verb {
		case "start":
			if *release == "" || *scale < 1 || *scale > 1000 {
				return usageError{"want --release RELEASE and --scale from 1 to 1000"}
			}
			releases, err := st.Releases(ctx, formation)
			if err != nil {
				return err
			}
			rel, err := rollbackTarget(releases, service, d.Services[service], *release)
			if err != nil {
				return err
			}
			if ds := d.Services[service]; rel == ds.Target() {
				return fmt.Errorf("release %s is what %s/%s runs already: a canary is another release", short(rel), formation, service)
			} else if ds.Exclusive {
				return fmt.Errorf("%s/%s keeps volumes: a canary would share its instances' volumes, which two processes never do", formation, service)
			}
			what = fmt.Sprintf("canary of release %s at scale %d", short(rel), *scale)
			err = updateService(ctx, st, formation, service, func(ds *state.DesiredService) error {
				ds.Canary = &state.Canary{Release: rel, Scale: *scale, Since: time.Now().UTC()}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s/%s: %s beside what runs (gilliam-sync canary promote|abort %s %s)\n", formation, service, what, formation, service)
		case "promote", "abort":
			err := updateService(ctx, st, formation, service, func(ds *state.DesiredService) error {
				if ds.Canary == nil {
					return fmt.Errorf("%s/%s has no canary", formation, service)
				}
				c := ds.Canary
				ds.Canary = nil
				if verb == "promote" {
					// Its running instances stay: the roll-out to it starts from them.
					ds.Latest, ds.LatestCause, ds.Pin = c.Release, "promote", nil
					what = "canary " + short(c.Release) + " promoted: it rolls out"
					return nil
				}
				var kept []state.Deployment
				for _, dep := range ds.Deployments {
					if dep.Release != c.Release {
						kept = append(kept, dep)
					}
				}
				ds.Deployments = kept
				what = "canary " + short(c.Release) + " aborted: its instances stop"
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s/%s: %s\n", formation, service, what)
		}
		return st.AddEvents(ctx, formation, state.Event{Time: time.Now().UTC(), Service: service, What: what})
	})(ctx)
}

// updateService changes one service's desired state with check-and-set.
func updateService(ctx context.Context, st *state.Store, formation, service string, update func(*state.DesiredService) error) error {
	_, err := st.UpdateDesired(ctx, formation, func(d *state.Desired) error {
		ds := d.Services[service]
		if err := update(&ds); err != nil {
			return err
		}
		d.Services[service] = ds
		return nil
	})
	return err
}

var formationsCmd = &command{
	name:    "formations",
	usage:   "[transfer NAME --to REPO_URL [--file gilliam.yml]]",
	summary: "which repository and file own each formation name; move a name to another",
	run:     runFormations,
}

func runFormations(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	to := fs.String("to", "", "transfer: the repository URL that gets the name, as the watch list spells it")
	file := fs.String("file", "gilliam.yml", "transfer: the file in that repository that deploys it")
	return manageCommand("formations", fs, args, stderr, func(ctx context.Context, st *state.Store, args []string) error {
		if len(args) == 0 {
			snap, err := st.Snapshot(ctx, 0, 0)
			if err != nil {
				return err
			}
			for _, name := range sortedKeys(snap.Claims) {
				c := snap.Claims[name]
				fmt.Fprintf(stdout, "%s\t%s\t%s\tsince %s\n", name, c.URL, c.File, c.Since.Format(time.RFC3339))
			}
			return nil
		}
		if args[0] != "transfer" || len(args) != 2 || *to == "" {
			return usageError{"want transfer NAME --to REPO_URL [--file F]"}
		}
		name := args[1]
		c := &state.Claim{Formation: name, Repo: gitwatch.CacheName(*to), URL: gitwatch.Sanitize(*to), File: *file, Since: time.Now().UTC()}
		if err := st.PutClaim(ctx, c); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s now belongs to %s (%s): the leader deploys it from there\n", name, c.URL, c.File)
		return st.AddEvents(ctx, name, state.Event{Time: c.Since, What: "name transferred to " + c.URL + " " + c.File})
	})(ctx)
}
