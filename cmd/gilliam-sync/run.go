package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/gilliam-sync/gilliam-sync/placement"
	"github.com/gilliam-sync/gilliam-sync/state"
	"github.com/gilliam-sync/gilliam-sync/sync"
)

var runCmd = &command{
	name:    "run",
	usage:   "[--detach] [-it] [--timeout D] FORMATION SERVICE [--] [CMD...]",
	summary: "run a one-off process in a container of a service's current release, on a host placement chooses",
	run:     runRun,
}

// Exit codes of run besides the process's own, as docker run has them.
const (
	exitRunFailed   = 125 // the one-off could not run
	exitInterrupted = 130 // stopped by Ctrl-C
)

// stdinFile is the process's stdin, a variable so that tests can give another.
var stdinFile = os.Stdin

func runRun(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	detach := fs.Bool("detach", false, "leave it running and print its ID (its output stays on its host)")
	it := fs.Bool("it", false, "give it this terminal's input (and a terminal when stdin is one)")
	timeout := fs.Duration("timeout", 0, "stop it when it runs longer (0: no limit)")
	newStore := consulFlags(fs)
	// FORMATION and SERVICE may have flags around them; the command starts after them and
	// is taken as it is, so its own flags are its own.
	var positional []string
	for len(positional) < 2 {
		if err := fs.Parse(args); err != nil {
			return flagExit(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" && len(positional) < 2 {
			args = args[1:]
			if len(args) == 0 {
				break
			}
		}
		positional, args = append(positional, args[0]), args[1:]
	}
	if len(positional) < 2 {
		fmt.Fprintln(stderr, "gilliam-sync run: want FORMATION SERVICE [--] [CMD...]")
		fs.Usage()
		return 2
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if *detach && *it {
		fmt.Fprintln(stderr, "gilliam-sync run: --detach and -it do not go together")
		return 2
	}
	store, err := newStore()
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync run:", err)
		return 1
	}
	o := &state.OneOff{Formation: positional[0], Service: positional[1], Command: args, Attached: !*detach,
		Timeout: *timeout, Cause: "run", Created: time.Now().UTC()}
	var tty *terminal
	if *it {
		o.Stdin = true
		if fd := int(stdinFile.Fd()); term.IsTerminal(fd) {
			o.TTY, tty = true, &terminal{fd: fd}
			if w, h, err := term.GetSize(fd); err == nil {
				o.Cols, o.Rows = uint(w), uint(h)
			}
		}
	}
	if err := startOneOff(ctx, store, o); err != nil {
		fmt.Fprintln(stderr, "gilliam-sync run:", err)
		return exitRunFailed
	}
	if *detach {
		st, err := waitStarted(ctx, store, o)
		if err != nil {
			fmt.Fprintln(stderr, "gilliam-sync run:", err)
			return exitRunFailed
		}
		if st.Done() && st.State == state.OneOffFailed {
			fmt.Fprintf(stderr, "gilliam-sync run: %s\n", st.Error)
			return exitRunFailed
		}
		fmt.Fprintln(stdout, o.ID)
		fmt.Fprintf(stderr, "gilliam-sync run: %s runs on host %s, detached; `gilliam-sync status %s` lists it while it runs\n", o.ID, o.Host, o.Formation)
		return 0
	}
	if tty != nil {
		if err := tty.raw(); err == nil {
			defer tty.restore()
		}
	}
	return attachOneOff(ctx, store, o, stdout, stderr)
}

// startOneOff completes a one-off request (its release, its host, its ID) and writes it.
func startOneOff(ctx context.Context, store *state.Store, o *state.OneOff) error {
	snap, err := store.Snapshot(ctx, 0, 0)
	if err != nil {
		return err
	}
	d := snap.Desired[o.Formation]
	if d == nil {
		return fmt.Errorf("no formation %q in Consul", o.Formation)
	}
	if o.Release, err = sync.OneOffRelease(d, o.Service); err != nil {
		return err
	}
	hosts, err := store.Hosts(ctx)
	if err != nil {
		return err
	}
	alive := hosts[:0]
	for _, h := range hosts {
		if h.Passing {
			alive = append(alive, h)
		}
	}
	w := &sync.World{KV: snap, Hosts: alive, Now: time.Now()}
	if o.Host, err = sync.OneOffHost(w, o.Formation, o.Service, o.Release, placement.Options{}); err != nil {
		return err
	}
	var b [8]byte
	rand.Read(b[:])
	o.ID = state.NewOneOffID(binary.BigEndian.Uint64(b[:]))
	return store.PutOneOff(ctx, o)
}

// pickupTimeout is how long a host has to say it took a one-off (it writes its status at
// once, before it pulls): a host that says nothing is gone, and the one-off is withdrawn.
const pickupTimeout = time.Minute

// errNotPickedUp says the chosen host did not take the one-off.
func errNotPickedUp(o *state.OneOff) error {
	return fmt.Errorf("host %s did not take %s within %s (is its host daemon running?); withdrawn", o.Host, o.ID, pickupTimeout)
}

// waitStarted waits until the one-off's host says it runs, or has ended.
func waitStarted(ctx context.Context, store *state.Store, o *state.OneOff) (*state.OneOffStatus, error) {
	var index uint64
	for start := time.Now(); ; {
		got, next, err := store.WaitOneOffIO(ctx, o.Host, o.ID, index, 10*time.Second)
		if err != nil {
			return nil, err
		}
		st := got.Status
		if st != nil && (st.State == state.OneOffRunning || st.Done()) {
			return st, nil
		}
		if st == nil && time.Since(start) > pickupTimeout {
			store.DeleteOneOff(context.WithoutCancel(ctx), o.Host, o.ID)
			return nil, errNotPickedUp(o)
		}
		index, _ = state.NextIndex(index, next)
	}
}

// attachOneOff streams a one-off's output as its host writes it, gives it stdin when it
// takes some, and returns its exit code once every chunk is out; it deletes the one-off
// then, or when ctx ends (Ctrl-C), which stops it.
func attachOneOff(ctx context.Context, store *state.Store, o *state.OneOff, stdout, stderr io.Writer) int {
	cleanup := func() {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := store.DeleteOneOff(c, o.Host, o.ID); err != nil {
			fmt.Fprintln(stderr, "gilliam-sync run:", err)
		}
	}
	defer cleanup()
	if o.Stdin {
		go pumpStdin(ctx, store, o, stdinFile)
	}
	var index, printed uint64 // the last chunk printed
	for start := time.Now(); ; {
		got, idx, err := store.WaitOneOffIO(ctx, o.Host, o.ID, index, 10*time.Second)
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "\ngilliam-sync run: interrupted; %s is stopped\n", o.ID)
			return exitInterrupted
		}
		if err != nil {
			time.Sleep(time.Second) // Consul away: try again, the output waits there
			index = 0
			continue
		}
		index, _ = state.NextIndex(index, idx)
		var read []uint64
		for _, c := range got.Out {
			if c.N <= printed {
				continue // printed; its delete is on its way
			}
			if len(c.Data) > 0 {
				w := stdout
				if c.Data[0] == state.OneOffStderr {
					w = stderr
				}
				w.Write(c.Data[1:])
			}
			read, printed = append(read, c.N), c.N
		}
		if len(read) > 0 {
			store.DeleteOneOffChunks(ctx, o.Host, o.ID, "out", read)
		}
		st := got.Status
		if st == nil && time.Since(start) > pickupTimeout {
			fmt.Fprintln(stderr, "gilliam-sync run:", errNotPickedUp(o))
			return exitRunFailed
		}
		if st.Done() && printed >= st.LastChunk {
			if st.State == state.OneOffFailed {
				fmt.Fprintf(stderr, "gilliam-sync run: %s on %s: %s\n", o.ID, o.Host, st.Error)
				return exitRunFailed
			}
			return st.ExitCode
		}
	}
}

// pumpStdin writes what it reads from in as the one-off's stdin chunks; an empty chunk
// says in ended.
func pumpStdin(ctx context.Context, store *state.Store, o *state.OneOff, in io.Reader) {
	data := make(chan []byte)
	go func() {
		defer close(data)
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				data <- append([]byte(nil), buf[:n]...)
			}
			if err != nil {
				return
			}
		}
	}()
	var n uint64
	for {
		select {
		case <-ctx.Done():
			return
		case b, ok := <-data:
			// Keystrokes come one by one: gather what comes within 20ms into one write.
			for more := ok; more; {
				select {
				case c, open := <-data:
					if !open {
						ok, more = false, false
						break
					}
					b = append(b, c...)
				case <-time.After(20 * time.Millisecond):
					more = false
				}
			}
			if len(b) > 0 {
				if err := store.PutOneOffInput(ctx, o.Host, o.ID, n, b); err != nil {
					return
				}
				n++
			}
			if !ok {
				store.PutOneOffInput(ctx, o.Host, o.ID, n, nil)
				return
			}
		}
	}
}

// terminal puts this terminal in raw mode while a one-off has it, and back after.
type terminal struct {
	fd    int
	state *term.State
}

func (t *terminal) raw() error {
	s, err := term.MakeRaw(t.fd)
	t.state = s
	return err
}

func (t *terminal) restore() {
	if t.state != nil {
		term.Restore(t.fd, t.state)
	}
}

// oneOffView is a one-off as status shows it.
type oneOffView struct {
	ID        string    `json:"id"`
	Formation string    `json:"formation"`
	Service   string    `json:"service"`
	Release   string    `json:"release"`
	Host      string    `json:"host"`
	Command   []string  `json:"command,omitempty"`
	Cause     string    `json:"cause,omitempty"`
	State     string    `json:"state"`
	Attached  bool      `json:"attached"`
	Created   time.Time `json:"created"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// collectOneOffs lists the one-offs there are (of one formation when only is set).
func collectOneOffs(ctx context.Context, store *state.Store, only string) ([]oneOffView, error) {
	list, err := store.OneOffs(ctx)
	if err != nil {
		return nil, err
	}
	var out []oneOffView
	for _, o := range list {
		if only != "" && o.Formation != only {
			continue
		}
		v := oneOffView{ID: o.ID, Formation: o.Formation, Service: o.Service, Release: o.Release, Host: o.Host,
			Command: o.Command, Cause: o.Cause, State: "requested", Attached: o.Attached, Created: o.Created}
		if st, err := store.OneOffStatus(ctx, o.Host, o.ID); err == nil && st != nil {
			v.State, v.Error = st.State, st.Error
			if st.State == state.OneOffExited {
				code := st.ExitCode
				v.ExitCode = &code
			}
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// printOneOffs writes the one-offs section of status.
func printOneOffs(w io.Writer, views []oneOffView) {
	if len(views) == 0 {
		return
	}
	fmt.Fprintln(w, "\none-off processes:")
	for _, v := range views {
		state := v.State
		if v.ExitCode != nil {
			state = fmt.Sprintf("exited %d", *v.ExitCode)
		}
		how := "attached"
		if !v.Attached {
			how = "detached"
		}
		cmd := strings.Join(v.Command, " ")
		if cmd == "" {
			cmd = "(the release's command)"
		}
		fmt.Fprintf(w, "  %s  %s/%s  release %s  on %s  %s, %s, %s ago: %s\n", v.ID, v.Formation, v.Service, short(v.Release),
			v.Host, state, how, time.Since(v.Created).Round(time.Second), cmd)
		if v.Error != "" {
			fmt.Fprintf(w, "    %s\n", v.Error)
		}
	}
}
