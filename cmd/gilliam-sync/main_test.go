package main

import (
	"flag"
	"io"
	"reflect"
	"testing"
)

func TestParseArgsInterspersed(t *testing.T) {
	tests := []struct {
		args       []string
		output     string
		positional []string
	}{
		{[]string{"hello", "--output", "json"}, "json", []string{"hello"}},
		{[]string{"--output", "json", "hello"}, "json", []string{"hello"}},
		{[]string{"a", "-output=json", "b"}, "json", []string{"a", "b"}},
		{[]string{"--", "--output", "x"}, "text", []string{"--output", "x"}},
		{nil, "text", nil},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		out := fs.String("output", "text", "")
		got, err := parseArgs(fs, tt.args)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if *out != tt.output || !reflect.DeepEqual(got, tt.positional) {
			t.Errorf("%q: output %q positional %q; want %q %q", tt.args, *out, got, tt.output, tt.positional)
		}
	}
}
