package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/gilliam-sync/gilliam-sync/build"
)

// defaultBuildData is the build data directory of a sync daemon (or gilliam-sync up) run
// with its default --data: its build folder holds the build logs, pack's home and the
// notes of recent builds.
const defaultBuildData = ".gilliam/sync/build"

var logsCmd = &command{
	name:    "logs",
	usage:   "build FORMATION SERVICE [--follow] [--data DIR]",
	summary: "print a service's latest build log; --follow keeps printing it, then the next builds'",
	run:     runLogs,
}

func runLogs(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	follow := fs.Bool("follow", false, "keep printing as the build writes, then each new build's log, until interrupted")
	fs.BoolVar(follow, "f", false, "short for --follow")
	data := fs.String("data", defaultBuildData, "the build data directory of the daemon that builds")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(positional) != 3 || positional[0] != "build" {
		fmt.Fprintln(stderr, "gilliam-sync logs: want build FORMATION SERVICE")
		fs.Usage()
		return 2
	}
	err = build.WriteLogs(ctx, *data, positional[1], positional[2], stdout, *follow)
	if errors.Is(err, build.ErrNoLogs) {
		fmt.Fprintf(stderr, "gilliam-sync logs: %v (is --data the builder's data directory?)\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "gilliam-sync logs:", err)
		return 1
	}
	return 0
}
