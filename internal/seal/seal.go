package seal

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/nacl/box"
)

// Prefixes of the text forms.
const (
	sealedPrefix  = "sealed:v1:"
	privatePrefix = "gilliam-key-v1:"
)

// PublicKey is a recipient's X25519 public key.
type PublicKey [32]byte

// String is the key as base64, as published in Consul.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// Fingerprint names the key in records and messages: 16 hex digits of its SHA-256.
func (p PublicKey) Fingerprint() string {
	sum := sha256.Sum256(p[:])
	return hex.EncodeToString(sum[:8])
}

// ParsePublic reads a public key as String writes it.
func ParsePublic(s string) (PublicKey, error) {
	var p PublicKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(p) {
		return p, fmt.Errorf("not a public key (want 32 bytes of base64)")
	}
	copy(p[:], b)
	return p, nil
}

// Key is a key pair: what opens the boxes sealed to its public key.
type Key struct {
	public  PublicKey
	private [32]byte
}

// Generate makes a new key pair.
func Generate() (*Key, error) {
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &Key{public: PublicKey(*pub), private: *priv}, nil
}

// Public is the key's public half.
func (k *Key) Public() PublicKey { return k.public }

// String is the private key's text form, as a key file holds it. It is a secret.
func (k *Key) String() string {
	return privatePrefix + base64.StdEncoding.EncodeToString(k.private[:])
}

// ParseKey reads a private key as String writes it.
func ParseKey(s string) (*Key, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), privatePrefix)
	b, err := base64.StdEncoding.DecodeString(rest)
	if !ok || err != nil || len(b) != 32 {
		return nil, errors.New("not a gilliam key (want " + privatePrefix + "<32 bytes of base64>)")
	}
	k := &Key{}
	copy(k.private[:], b)
	pub, err := publicOf(k.private)
	if err != nil {
		return nil, err
	}
	k.public = PublicKey(pub)
	return k, nil
}

// LoadKeyFile reads the key in path. With create, a missing file is made with a new key
// (mode 0600, its folder 0700). A key file others can read is refused: it opens secrets.
func LoadKeyFile(path string, create bool) (k *Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if k, err = Generate(); err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		if _, err := f.WriteString(k.String() + "\n"); err != nil {
			f.Close()
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		return k, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("key file %s: mode %04o lets others read it; chmod 600 it", path, st.Mode().Perm())
	}
	if k, err = ParseKey(string(b)); err != nil {
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, false, nil
}

// WriteKeyFile writes k to path (0600), replacing what is there.
func WriteKeyFile(path string, k *Key) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	return nil
}

// IsSealed says whether s is a sealed value.
func IsSealed(s string) bool { return strings.HasPrefix(s, sealedPrefix) }

// Seal encrypts plaintext to the holder of to's private key.
func Seal(to PublicKey, plaintext []byte) (string, error) {
	out, err := box.SealAnonymous(nil, plaintext, (*[32]byte)(&to), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return sealedPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts a value sealed to k's public key.
func (k *Key) Open(sealed string) ([]byte, error) {
	rest, ok := strings.CutPrefix(sealed, sealedPrefix)
	if !ok {
		return nil, errors.New("not a sealed value")
	}
	b, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("sealed value: bad base64")
	}
	out, ok := box.OpenAnonymous(nil, b, (*[32]byte)(&k.public), &k.private)
	if !ok {
		return nil, fmt.Errorf("sealed value does not open with key %s (sealed to another key, or altered)", k.public.Fingerprint())
	}
	return out, nil
}

// SealEnv seals a set of variables as one box.
func SealEnv(to PublicKey, env map[string]string) (string, error) {
	b, err := json.Marshal(env)
	if err != nil {
		return "", err
	}
	return Seal(to, b)
}

// OpenEnv opens what SealEnv sealed.
func (k *Key) OpenEnv(sealed string) (map[string]string, error) {
	b, err := k.Open(sealed)
	if err != nil {
		return nil, err
	}
	var env map[string]string
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("sealed env: %w", err)
	}
	return env, nil
}

// Digest is a keyed hash of a set of variables (HMAC-SHA256 over their sorted JSON): equal
// sets give equal digests, and without the key nothing about the values can be learnt or
// guessed from it. Empty for no variables.
func Digest(key []byte, env map[string]string) string {
	if len(env) == 0 {
		return ""
	}
	b, err := json.Marshal(env) // keys sorted
	if err != nil {
		panic("seal: marshal env: " + err.Error()) // plain strings: cannot fail
	}
	m := hmac.New(sha256.New, key)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil)[:16])
}
