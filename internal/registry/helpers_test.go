package registry_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gilliam-sync/gilliam-sync/internal/registry"
)

var testCreds = registry.Credentials{
	Push: registry.Credential{Username: "push", Password: "push-secret"},
	Pull: registry.Credential{Username: "pull", Password: "pull-secret"},
}

var (
	pushAuth = remote.WithAuth(&authn.Basic{Username: testCreds.Push.Username, Password: testCreds.Push.Password})
	pullAuth = remote.WithAuth(&authn.Basic{Username: testCreds.Pull.Username, Password: testCreds.Pull.Password})
)

// do sends a request with cred as Basic authentication (none when cred is empty).
func do(t *testing.T, method, url string, cred registry.Credential, body ...string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(strings.Join(body, "")))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Password != "" {
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	return http.DefaultClient.Do(req)
}
