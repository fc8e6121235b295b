package seal

import "testing"

// What sealing costs the leader: one release's vars opened with the root key and sealed to
// a host (per host a release is placed on), and a digest (per release derived).
func BenchmarkSealForHost(b *testing.B) {
	root, _ := Generate()
	host, _ := Generate()
	vars := map[string]string{}
	for _, k := range []string{"DATABASE_URL", "REDIS_URL", "SESSION_KEY", "API_TOKEN", "SMTP_PASSWORD"} {
		vars[k] = "a-secret-value-of-some-length-0123456789"
	}
	sealed, _ := SealEnv(root.Public(), vars)
	b.ResetTimer()
	for b.Loop() {
		v, err := root.OpenEnv(sealed)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := SealEnv(host.Public(), v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	vars := map[string]string{"DATABASE_URL": "pg://x", "SESSION_KEY": "k"}
	for b.Loop() {
		Digest([]byte("key"), vars)
	}
}
