package schema

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// billionLaughs is the classic alias bomb: levels of nine aliases to the level below,
// 9^levels values once expanded, in a few hundred bytes.
func billionLaughs(levels int) string {
	var b strings.Builder
	b.WriteString("x-0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "x-%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 9), ", "))
	}
	fmt.Fprintf(&b, "services:\n  web:\n    path: .\n    command: *l%d\n", levels)
	return b.String()
}

// The bomb is refused without expanding it: the memory it takes is that of a small file
// (and so is the time, logged).
func TestAliasBombRefused(t *testing.T) {
	src := billionLaughs(9) // 9^10, 3.4 billion values
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, errs := parse(t, src)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	want := "this value expands to more than 100000 values through aliases"
	if len(errs) != 1 || !strings.Contains(errs[0], want) {
		t.Fatalf("errors = %q, want one saying %q", errs, want)
	}
	t.Logf("refused in %v", elapsed) // logged, not asserted: -race and a busy machine vary it
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("allocated %d bytes; want a few hundred KiB", alloc)
	}
}

// Aliases in moderation are fine, even used many times.
func TestAliasesWithinLimits(t *testing.T) {
	src := strings.Replace(billionLaughs(3), "    command: *l3\n", "", 1) + "x-use: [*l3, *l3, *l3]\n" // 3 * 9^4 values
	_, errs := parse(t, src)
	if len(errs) != 0 {
		t.Fatalf("unexpected errors: %q", errs)
	}
}

// Merge keys go through the same measure: a bomb made of merges is refused too.
func TestMergeBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "x-%d: &m%d [", i, i)
		for j := range 9 {
			fmt.Fprintf(&b, "{k%d: {<<: *m%d}}, ", j, i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("services:\n  web:\n    <<: *m8\n    path: .\n")
	start := time.Now()
	_, errs := parse(t, b.String())
	if len(errs) != 1 || !strings.Contains(errs[0], "through aliases") {
		t.Fatalf("errors = %q", errs)
	}
	t.Logf("refused in %v", time.Since(start)) // logged, not asserted, as above
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"alias to itself", "x-a: &a [1, *a]\nservices:\n  web:\n    path: .\n",
			[]string{"1:13: the alias *a is used inside the value it names"}},
		{"alias to an enclosing mapping", "services: &s\n  web:\n    path: .\n    env: *s\n",
			[]string{"4:10: the alias *s is used inside the value it names"}},
		{"nesting too deep", "x-deep: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\nservices:\n  web:\n    path: .\n",
			[]string{"1:40: values nest more than 32 levels deep"}},
		{"nesting too deep through aliases", deepAliases(20), []string{"15:7: values nest more than 32 levels deep"}},
		{"too many values without aliases", "x-many: [" + strings.Repeat("1,", 100_001) + "1]\nservices:\n  web:\n    path: .\n",
			[]string{"1:9: the document has more than 100000 values"}},
		{"unknown alias", "services:\n  web: *nope\n", []string{"invalid YAML: unknown anchor 'nope' referenced"}},
		{"second document", "services:\n  web:\n    path: .\n---\nservices: {}\n",
			[]string{"4:1: a second YAML document begins here: a gilliam.yml holds one"}},
		{"broken second document", "services:\n  web:\n    path: .\n---\na: [\n",
			[]string{"6: invalid YAML: did not find expected node content"}},
		{"empty", "", []string{"the file is empty: a gilliam.yml needs at least `services`"}},
		{"comments only", "# nothing\n", []string{"the file is empty: a gilliam.yml needs at least `services`"}},
		{"null document", "---\n...\n", []string{"the file is empty: a gilliam.yml needs at least `services`"}},
		{"scanner error, lines from 1", "services:\n  web:\n    path: .\n  bad: x: y\n",
			[]string{"4: invalid YAML: mapping values are not allowed in this context"}},
		{"parser error, lines from 0 made from 1", "services:\n  web:\n    path: .\n   ports: [8080\n",
			[]string{"2: invalid YAML: did not find expected key"}},
		{"tab indentation", "services:\n\tweb:\n", []string{"2: invalid YAML: found character that cannot start any token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrors(t, tt.src, tt.want) })
	}
}

// deepAliases nests a value depth levels through a chain of aliases, each adding two.
func deepAliases(depth int) string {
	var b strings.Builder
	b.WriteString("x-0: &d0 [1]\n")
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, "x-%d: &d%d [[*d%d]]\n", i, i, i-1)
	}
	b.WriteString("services:\n  web:\n    path: .\n")
	return b.String()
}

func TestFileTooLarge(t *testing.T) {
	big := "services:\n  web:\n    path: .\n" + strings.Repeat("# padding\n", MaxFileSize/10)
	if len(big) <= MaxFileSize {
		t.Fatal("test file not large enough")
	}
	checkErrors(t, big, []string{"the file is larger than 1Mi, the limit"})

	// At the limit exactly, the file is read.
	atLimit := big[:MaxFileSize]
	if _, errs := parse(t, atLimit); len(errs) != 0 {
		t.Errorf("a file of exactly MaxFileSize bytes: %q", errs)
	}
}

// ParseFile refuses a large file after reading one byte more than the limit, not all of it.
func TestParseFileTooLarge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gilliam.yml")
	if err := os.WriteFile(file, []byte(strings.Repeat("#\n", 4*MaxFileSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(file)
	list, ok := err.(ErrorList)
	if !ok || len(list) != 1 || list[0].File != file || !strings.Contains(list[0].Msg, "larger than") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseFileMissing(t *testing.T) {
	_, err := ParseFile(filepath.Join(t.TempDir(), "nope.yml"))
	if !os.IsNotExist(err) {
		t.Fatalf("err = %v, want a not-exist error (not an ErrorList: nothing to fix in a file)", err)
	}
}

// A long string named by many aliases is refused before it is checked again and again.
func TestTextBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-long: &long \"" + strings.Repeat("x", 800_000) + "\"\nservices:\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "  s%d: {path: ., process: *long}\n", i)
	}
	start := time.Now()
	_, errs := parse(t, b.String())
	if len(errs) != 1 || !strings.Contains(errs[0], "more than 4Mi of text through aliases") {
		t.Fatalf("errors = %q", errs)
	}
	// How long it took is logged, not asserted: under -race on a busy machine it varies
	// threefold (3.3s once). The bound is the refusal above: the measure stops at the limit.
	t.Logf("refused in %v", time.Since(start))
}

// A long key or value repeated in many errors must not blow up the messages.
func TestLongValuesAreCut(t *testing.T) {
	long := strings.Repeat("x", 100_000)
	var b strings.Builder
	b.WriteString("x-long: &long \"" + long + "\"\nservices:\n")
	for i := range 50 {
		fmt.Fprintf(&b, "  s%d:\n    path: .\n    process: *long\n    type: *long\n", i)
	}
	f, err := Parse("gilliam.yml", []byte(b.String()))
	if f != nil || err == nil {
		t.Fatal("no error")
	}
	if n := len(err.Error()); n > 50_000 {
		t.Errorf("%d bytes of messages for 100 errors", n)
	}
}
