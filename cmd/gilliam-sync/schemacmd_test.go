package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gilliam-sync/gilliam-sync/schema"
)

func TestSchemaCommand(t *testing.T) {
	code, stdout, stderr := runCLI(t, "schema")
	if code != 0 || stderr != "" || stdout != string(schema.JSONSchema()) {
		t.Fatalf("exit %d, stderr %q, stdout is not JSONSchema()", code, stderr)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if s["$schema"] == nil || s["properties"] == nil {
		t.Errorf("not a JSON Schema: %v", s)
	}
}

func TestSchemaCommandUsage(t *testing.T) {
	if code, stdout, stderr := runCLI(t, "schema", "extra"); code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: gilliam-sync schema") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
