package registry

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Credential is a user name and a password: sent with HTTP Basic authentication, or the
// password alone as a bearer token.
type Credential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Credentials are who may use the registry. Push may do everything: push, delete, collect
// garbage, and read. Pull may only read (GET and HEAD): what hosts are given. Anyone else
// gets 401 with a Basic challenge, which the Docker engine and go-containerregistry answer
// with the credential they were given.
type Credentials struct {
	Push Credential `json:"push"`
	Pull Credential `json:"pull"`
}

// Realm is the realm of the registry's Basic challenge.
const Realm = "gilliam-sync registry"

// GenerateCredentials makes a push and a pull credential, each with a random 256-bit
// password.
func GenerateCredentials() (Credentials, error) {
	push, err := randomSecret()
	if err != nil {
		return Credentials{}, err
	}
	pull, err := randomSecret()
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Push: Credential{"push", push}, Pull: Credential{"pull", pull}}, nil
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("registry: generate a credential: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// LoadOrCreateCredentials reads the credentials kept at path, or generates them and
// writes them there (mode 0600, its folder 0700) when the file does not exist.
func LoadOrCreateCredentials(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		var c Credentials
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("registry: credentials %s: %w", path, err)
		}
		if c.Push.Password == "" || c.Pull.Password == "" {
			return c, fmt.Errorf("registry: credentials %s: a push and a pull password are required", path)
		}
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Credentials{}, fmt.Errorf("registry: credentials: %w", err)
	}
	c, err := GenerateCredentials()
	if err != nil {
		return c, err
	}
	b, _ = json.MarshalIndent(c, "", "  ")
	if err := writeSecret(path, b); err != nil {
		return c, fmt.Errorf("registry: credentials: %w", err)
	}
	return c, nil
}

// WriteDockerConfig writes cred for registry (host:port) at path as a Docker client
// config.json (mode 0600): what `gilliam-sync host --registry-auth` reads, and what
// DOCKER_CONFIG points the Docker CLI, pack and go-containerregistry's default keychain at.
func WriteDockerConfig(path, registry string, cred Credential) error {
	auth := base64.StdEncoding.EncodeToString([]byte(cred.Username + ":" + cred.Password))
	b, _ := json.MarshalIndent(map[string]any{"auths": map[string]any{registry: map[string]string{"auth": auth}}}, "", "  ")
	if err := writeSecret(path, b); err != nil {
		return fmt.Errorf("registry: docker config: %w", err)
	}
	return nil
}

func writeSecret(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// role is what a request's credential allows.
type role int

const (
	anonymous role = iota
	reader
	writer
)

// roleOf checks a request's Authorization header against the credentials, in constant
// time: Basic with a user name and password, or Bearer with a password alone.
func (c Credentials) roleOf(req *http.Request) role {
	h := req.Header.Get("Authorization")
	scheme, value, _ := strings.Cut(h, " ")
	var user, pass string
	basic := strings.EqualFold(scheme, "basic")
	switch strings.ToLower(scheme) {
	case "basic":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
		if err != nil {
			return anonymous
		}
		var ok bool
		if user, pass, ok = strings.Cut(string(b), ":"); !ok {
			return anonymous
		}
	case "bearer":
		pass = strings.TrimSpace(value)
	default:
		return anonymous
	}
	matches := func(cred Credential) bool {
		if cred.Password == "" {
			return false
		}
		okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(cred.Password)) == 1
		okUser := !basic || subtle.ConstantTimeCompare([]byte(user), []byte(cred.Username)) == 1
		return okPass && okUser
	}
	switch {
	case matches(c.Push):
		return writer
	case matches(c.Pull):
		return reader
	}
	return anonymous
}

// Repository names and references as the OCI distribution specification writes them.
// A name is checked before any path is built from it: none can hold "..", a leading "_"
// or an upper-case letter.
var (
	nameComponent = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	namePattern   = nameComponent + `(?:/` + nameComponent + `)*`
	tagPattern    = `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`
	digestPattern = `[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`

	// apiPath is the shape of every repository path of the API; its name is then checked.
	apiPath = regexp.MustCompile(`^/v2/(.+)/(manifests|blobs|tags|referrers)/(.*)$`)
	// validPath lists the repository paths the registry serves, names valid.
	validPath = regexp.MustCompile(`^/v2/` + namePattern + `/(?:` +
		`manifests/(?:` + tagPattern + `|` + digestPattern + `)` +
		`|blobs/` + digestPattern +
		`|blobs/uploads/?` +
		`|blobs/uploads/[A-Za-z0-9._=-]+` +
		`|tags/list` +
		`|referrers/` + digestPattern + `)$`)
	validName = regexp.MustCompile(`^` + namePattern + `$`)
)

// maxNameLength is the longest repository name the distribution specification allows.
const maxNameLength = 255

// checkPath says whether a request's path is one the registry serves with a valid name,
// and if not, the status and the distribution error code to answer.
func checkPath(req *http.Request) (int, string, bool) {
	p := req.URL.Path
	switch p {
	case "/v2", "/v2/", "/v2/_catalog":
		return 0, "", true
	}
	m := apiPath.FindStringSubmatch(p)
	if m == nil {
		return http.StatusNotFound, "NAME_UNKNOWN", false
	}
	// The name is what precedes the last manifests/, blobs/, tags/ or referrers/: check the
	// whole path's shape, the name included.
	if !validPath.MatchString(p) || len(m[1]) > maxNameLength {
		return http.StatusBadRequest, "NAME_INVALID", false
	}
	if from := req.URL.Query().Get("from"); from != "" && !validName.MatchString(from) {
		return http.StatusBadRequest, "NAME_INVALID", false
	}
	return 0, "", true
}

// writeError answers a distribution API error.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
}

// authorize answers a request its credential does not allow, and says whether it did.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request) bool {
	got := r.creds.roleOf(req)
	need := reader
	if (req.Method != http.MethodGet && req.Method != http.MethodHead) || req.URL.Path == GCPath {
		need = writer
	}
	switch {
	case got >= need:
		return true
	case got == anonymous:
		w.Header().Set("WWW-Authenticate", `Basic realm="`+Realm+`"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	default:
		writeError(w, http.StatusForbidden, "DENIED", "this credential may only pull")
	}
	return false
}

// Keychain gives cred for the registry at host (host:port) and defers to the Docker
// keychain for every other registry: what the builder pushes to the embedded registry with.
func Keychain(host string, cred Credential) authn.Keychain {
	return authn.NewMultiKeychain(keychain{host: host, auth: &authn.Basic{Username: cred.Username, Password: cred.Password}}, authn.DefaultKeychain)
}

type keychain struct {
	host string
	auth authn.Authenticator
}

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.host {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}
