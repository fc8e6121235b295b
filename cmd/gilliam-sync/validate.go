package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gilliam-sync/gilliam-sync/schema"
)

var validateCmd = &command{
	name:    "validate",
	usage:   "[FILE|DIR] [--output text|json]",
	summary: "check a gilliam.yml and print every problem as file:line:column: message",
	run:     runValidate,
}

// validateResult is what validate prints with --output json. Errors is never null: an
// empty list when the file is valid.
type validateResult struct {
	File  string `json:"file"`
	Valid bool   `json:"valid"`
	// Formation is the formation's name; DefaultName is set when the file names none and
	// the name comes from the folder, as it would from the repository.
	Formation   string          `json:"formation,omitempty"`
	DefaultName bool            `json:"defaultName,omitempty"`
	Services    []string        `json:"services,omitempty"`
	Errors      []*schema.Error `json:"errors"`
}

// runValidate exits 0 when the file is valid, 1 when it is not (or cannot be read), 2 on
// a usage error. A FILE is read as it is; a DIR means DIR/gilliam.yml. Errors go to stderr
// one per line, the summary of a valid file to stdout; --output json prints a
// validateResult to stdout in both cases.
func runValidate(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	output := fs.String("output", "text", "output format: text or json")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case len(positional) > 1:
		fmt.Fprintln(stderr, "gilliam-sync validate: one FILE or DIR at most")
		fs.Usage()
		return 2
	case *output != "text" && *output != "json":
		fmt.Fprintf(stderr, "gilliam-sync validate: --output is text or json, not %q\n", *output)
		fs.Usage()
		return 2
	}
	target := "."
	if len(positional) == 1 {
		target = positional[0]
	}
	res := validateFile(target)
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else if res.Valid {
		fmt.Fprintln(stdout, summary(res))
	} else {
		for _, e := range res.Errors {
			fmt.Fprintln(stderr, e.Error())
		}
	}
	if !res.Valid {
		return 1
	}
	return 0
}

// validateFile parses target, a file or a folder holding gilliam.yml.
func validateFile(target string) *validateResult {
	file := target
	if st, err := os.Stat(target); err == nil && st.IsDir() {
		file = filepath.Join(target, "gilliam.yml")
	}
	res := &validateResult{File: file, Errors: []*schema.Error{}}
	f, err := schema.ParseFile(file)
	var list schema.ErrorList
	switch {
	case errors.As(err, &list):
		res.Errors = list
		return res
	case err != nil:
		// Unreadable: no position to give, but the same shape for tools.
		msg := err.Error()
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			msg = "cannot read the file: " + pe.Err.Error() // the path is the error's file
		}
		res.Errors = []*schema.Error{{File: file, Msg: msg}}
		return res
	}
	res.Valid = true
	res.Formation = f.Name
	if f.Name == "" {
		abs, err := filepath.Abs(filepath.Dir(file))
		if err != nil {
			abs = filepath.Dir(file)
		}
		res.Formation, res.DefaultName = schema.DefaultName(abs), true
	}
	res.Services = f.ServiceNames()
	return res
}

// summary is the one line validate prints for a valid file:
// "gilliam.yml: formation hello, 1 service, valid".
func summary(res *validateResult) string {
	name := "formation " + res.Formation
	if res.DefaultName {
		name += " (from the folder's name: set formation: to choose)"
	}
	services := fmt.Sprintf("%d services", len(res.Services))
	if len(res.Services) == 1 {
		services = "1 service"
	}
	return fmt.Sprintf("%s: %s, %s, valid", res.File, name, services)
}
