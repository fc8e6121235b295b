package sync

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// The package reads as observe, decide, apply in functions a reader takes in at once
// (issue 12's acceptance): none is 80 lines or longer.
func TestNoFunctionOf80Lines(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fs := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fs, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			if n := fs.Position(fd.End()).Line - fs.Position(fd.Pos()).Line + 1; n >= 80 {
				t.Errorf("%s: %s is %d lines: split it (under 80)", fs.Position(fd.Pos()), fd.Name.Name, n)
			}
		}
	}
}
