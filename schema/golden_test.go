package schema

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// -update rewrites the golden files of the invalid examples and the checked-in JSON
// Schema from what the code produces now. Review the diff before committing it.
var update = flag.Bool("update", false, "rewrite golden files")

// repoRoot is where the examples are, seen from this package's directory. Error messages
// name files relative to it, the way `gilliam-sync validate` run at the root names them.
const repoRoot = ".."

// invalidCases returns the folders of examples/formations/invalid, relative to the root.
func invalidCases(t testing.TB) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(repoRoot, "examples/formations/invalid/*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no invalid examples found: %v", err)
	}
	for i, dir := range dirs {
		dirs[i], _ = filepath.Rel(repoRoot, dir)
	}
	return dirs
}

// validExamples returns the gilliam.yml of every example formation, relative to the root.
func validExamples(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "examples/formations/*/gilliam.yml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("want at least two valid examples, found %d: %v", len(files), err)
	}
	for i, f := range files {
		files[i], _ = filepath.Rel(repoRoot, f)
	}
	return files
}

func TestInvalidExamples(t *testing.T) {
	for _, dir := range invalidCases(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			name := filepath.ToSlash(filepath.Join(dir, "gilliam.yml"))
			data, err := os.ReadFile(filepath.Join(repoRoot, name))
			if err != nil {
				t.Fatal(err)
			}
			f, err := Parse(name, data)
			if err == nil {
				t.Fatalf("parsed without error: %+v", f)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Fatalf("error is a %T, want an ErrorList: %v", err, err)
			}
			got := err.Error() + "\n"
			golden := filepath.Join(repoRoot, dir, "expected.txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestValidExamples(t *testing.T) {
	for _, file := range validExamples(t) {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			f, err := ParseFile(filepath.Join(repoRoot, file))
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Services) == 0 {
				t.Fatal("no services")
			}
			// Every built service's folder exists in the example, as the build will need it.
			for _, s := range f.Services {
				if !s.Built() {
					continue
				}
				dir := filepath.Join(repoRoot, filepath.Dir(file), s.Path)
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					t.Errorf("service %s: path %s is not a folder of the example", s.Name, s.Path)
				}
			}
		})
	}
}

// lines splits an ErrorList's text into lines with the file name taken off, for tables.
func lines(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimPrefix(l, "gilliam.yml: ") // the file as a whole
		out = append(out, strings.TrimPrefix(l, "gilliam.yml:"))
	}
	return out
}
