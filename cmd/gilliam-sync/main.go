package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// A command is one verb of the binary. run gets a flag set named and documented for the
// command (its own flags are added to it), parses args with it, and returns the process exit
// code; it writes only to stdout and stderr, so tests call it directly.
type command struct {
	name    string
	usage   string // arguments after the name, for help
	summary string
	run     func(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int
}

// commands, in the order help lists them.
var commands = []*command{
	upCmd,
	syncCmd,
	hostCmd,
	routerCmd,
	statusCmd,
	planCmd,
	releasesCmd,
	rollbackCmd,
	unpinCmd,
	scaleCmd,
	volumesCmd,
	canaryCmd,
	formationsCmd,
	envCmd,
	keysCmd,
	runCmd,
	logsCmd,
	gcCmd,
	validateCmd,
	schemaCmd,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, newFlagSet(c, stderr), args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "gilliam-sync: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "gilliam-sync: GitOps deployments from gilliam.yml, with Consul and Docker")
	fmt.Fprintln(w, "\nUsage: gilliam-sync COMMAND [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun gilliam-sync COMMAND -h for a command's flags.")
}

// newFlagSet is a flag set whose usage names the command and its arguments.
func newFlagSet(c *command, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: gilliam-sync %s %s\n\n%s\n\nFlags:\n", c.name, c.usage, c.summary)
		fs.PrintDefaults()
	}
	return fs
}

// flagExit is the exit code after a flag parse error: 0 for -h, 2 for a bad flag (the
// flag package has already printed why).
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// parseArgs parses flags wherever they stand among the arguments (gilliam-sync status
// hello --output json, as well as --output json hello) and returns the positional ones.
// After "--" everything is positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
