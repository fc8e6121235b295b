package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/gilliam-sync/gilliam-sync/schema"
)

var schemaCmd = &command{
	name:    "schema",
	usage:   "",
	summary: "print the JSON Schema of gilliam.yml, for editors (yaml-language-server)",
	run:     runSchema,
}

func runSchema(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(positional) > 0 {
		fmt.Fprintln(stderr, "gilliam-sync schema: no arguments")
		fs.Usage()
		return 2
	}
	if _, err := stdout.Write(schema.JSONSchema()); err != nil {
		return 1
	}
	return 0
}
