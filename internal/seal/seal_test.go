package seal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	s, err := Seal(a.Public(), []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed(s) || strings.Contains(s, "hunter2") {
		t.Fatalf("sealed form %q", s)
	}
	if got, err := a.Open(s); err != nil || string(got) != "hunter2" {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := b.Open(s); err == nil {
		t.Fatal("another key opened it")
	}
	tampered := s[:len(s)-4] + "AAA="
	if _, err := a.Open(tampered); err == nil {
		t.Fatal("an altered box opened")
	}
	s2, _ := Seal(a.Public(), []byte("hunter2"))
	if s2 == s {
		t.Fatal("two seals of one value are equal: a reader could compare them")
	}
}

func TestKeyText(t *testing.T) {
	k, _ := Generate()
	k2, err := ParseKey(k.String())
	if err != nil || k2.Public() != k.Public() {
		t.Fatalf("round trip: %v", err)
	}
	p, err := ParsePublic(k.Public().String())
	if err != nil || p != k.Public() {
		t.Fatalf("public round trip: %v", err)
	}
	if _, err := ParseKey("nonsense"); err == nil {
		t.Fatal("nonsense parsed")
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "sync.key")
	if _, _, err := LoadKeyFile(path, false); err == nil {
		t.Fatal("a missing key file without create")
	}
	k, created, err := LoadKeyFile(path, true)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	k2, created, err := LoadKeyFile(path, true)
	if err != nil || created || k2.Public() != k.Public() {
		t.Fatalf("reload: %v %v", created, err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadKeyFile(path, false); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key file: %v", err)
	}
}

func TestDigest(t *testing.T) {
	k1, k2 := []byte("one"), []byte("two")
	env := map[string]string{"A": "1", "B": "2"}
	if Digest(k1, env) != Digest(k1, map[string]string{"B": "2", "A": "1"}) {
		t.Fatal("order changed the digest")
	}
	if Digest(k1, env) == Digest(k2, env) || Digest(k1, env) == Digest(k1, map[string]string{"A": "1", "B": "3"}) {
		t.Fatal("digest ignores key or value")
	}
	if Digest(k1, nil) != "" {
		t.Fatal("no vars, a digest")
	}
}

func TestEnv(t *testing.T) {
	k, _ := Generate()
	s, err := SealEnv(k.Public(), map[string]string{"DATABASE_URL": "postgres://x"})
	if err != nil {
		t.Fatal(err)
	}
	env, err := k.OpenEnv(s)
	if err != nil || env["DATABASE_URL"] != "postgres://x" {
		t.Fatalf("%v %v", env, err)
	}
}
