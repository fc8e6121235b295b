package build

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// What checkDockerfile refuses, line named, and what it lets through. Pure: the engine and
// DNS are stood in for by the policy's functions.
func TestCheckDockerfile(t *testing.T) {
	inEngine := func(_ context.Context, ref string) bool { return ref == "127.0.0.1:5000/gilliam/stack-run:busybox" }
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "registry.example.com":
			return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
		case "rebind.example.com":
			return []netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, errors.New("no such host")
	}
	policy := dockerfilePolicy{inEngine: inEngine, lookup: lookup,
		registries: Registries{Insecure: []string{"10.1.2.3:5000"}}}
	refused := []struct{ name, dockerfile, want string }{
		{"ADD of a loopback URL", "FROM scratch\nADD http://127.0.0.1:8500/v1/kv/x?raw /x\n",
			"Dockerfile line 2: ADD http://127.0.0.1:8500/v1/kv/x?raw /x: ADD of a URL is refused"},
		{"ADD of a URL in capitals, with flags", "FROM scratch\nadd --chown=1:1 HTTPS://example.com/app /x\n",
			"Dockerfile line 2: add --chown=1:1 HTTPS://example.com/app /x: ADD of a URL is refused"},
		{"ADD of a URL on a continued line", "FROM scratch\nADD \\\n  http://169.254.169.254/latest/meta-data/ \\\n  /x\n",
			"Dockerfile line 2: ADD"},
		{"ADD of a URL in JSON form", "FROM scratch\nADD [\"http://127.0.0.1:8500/\", \"/x\"]\n",
			"Dockerfile line 2: ADD [\"http://127.0.0.1:8500/\", \"/x\"]: ADD of a URL is refused"},
		{"ADD of a git URL", "FROM scratch\nADD git@example.com:a/b.git /src\n", "ADD of a URL is refused"},
		{"ADD of a variable", "FROM scratch\nARG U=http://127.0.0.1:8500/\nADD $U /x\n",
			"Dockerfile line 3: ADD $U /x: ADD of a source with a variable or an escape is refused"},
		{"ADD of an escaped URL", "FROM scratch\nADD http:\\//127.0.0.1/ /x\n", "ADD of a source with a variable or an escape is refused"},
		{"ONBUILD ADD of a URL", "FROM scratch\nONBUILD ADD http://127.0.0.1:8500/ /x\n",
			"Dockerfile line 2: ONBUILD ADD http://127.0.0.1:8500/ /x: ADD of a URL is refused"},
		{"a URL after the escape directive", "# escape=`\nFROM scratch\nADD `\n  http://127.0.0.1/ /x\n", "Dockerfile line 3: "},
		{"heredoc", "FROM scratch\nCOPY <<EOF /x\nADD http://127.0.0.1:8500/ /y\nEOF\n",
			"Dockerfile line 2: COPY <<EOF /x: heredocs are not supported"},
		{"base image on loopback", "FROM 127.0.0.1:8500/app\n",
			"Dockerfile line 1: FROM 127.0.0.1:8500/app: image 127.0.0.1:8500/app: registry 127.0.0.1:8500 is not allowed: a loopback address"},
		{"base image on the metadata address", "FROM 169.254.169.254/latest\n", "a link-local address"},
		{"base image from a variable", "ARG BASE=10.0.0.1:5000/app\nFROM $BASE\n",
			"Dockerfile line 2: FROM $BASE: image 10.0.0.1:5000/app: registry 10.0.0.1:5000 is not allowed: a private address"},
		{"base image on localhost", "FROM localhost:5000/app\n", "localhost is the host itself"},
		{"base image whose name resolves to loopback", "FROM rebind.example.com/app\n",
			"registry rebind.example.com is not allowed: its name resolves to a loopback address"},
		{"COPY --from an image on loopback", "FROM scratch\nCOPY --from=127.0.0.1:8500/app /a /a\n",
			"Dockerfile line 2: COPY --from=127.0.0.1:8500/app /a /a: image 127.0.0.1:8500/app"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			err := checkDockerfile(context.Background(), []byte(tc.dockerfile), nil, policy)
			var df *dockerfileError
			if !errors.As(err, &df) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (%T), want a Dockerfile error with %q", err, err, tc.want)
			}
		})
	}

	allowed := []struct{ name, dockerfile string }{
		{"COPY and a local ADD", "FROM scratch\nCOPY app /app\nADD files.tar /files\n"},
		{"base image in the engine", "FROM 127.0.0.1:5000/gilliam/stack-run:busybox\nRUN true\n"},
		{"listed insecure registry", "FROM 10.1.2.3:5000/team/base:1\n"},
		{"public registry", "FROM registry.example.com/team/base:1\n"},
		{"stages", "FROM scratch AS build\nCOPY a /a\nFROM build\nCOPY --from=build /a /b\nCOPY --from=0 /a /c\n"},
		{"build arg overriding a default", "ARG BASE=127.0.0.1:8500/app\nFROM $BASE\n"},
		{"a URL in a RUN line", "FROM scratch\nRUN wget http://example.com/app\n"},
	}
	for _, tc := range allowed {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]string{"BASE": "registry.example.com/team/base:1"}
			if err := checkDockerfile(context.Background(), []byte(tc.dockerfile), args, policy); err != nil {
				t.Fatal(err)
			}
		})
	}

	// The operator may allow ADD of URLs.
	withURLs := policy
	withURLs.urls = true
	if err := checkDockerfile(context.Background(), []byte("FROM scratch\nADD https://example.com/app /x\n"), nil, withURLs); err != nil {
		t.Fatalf("ADD of a URL allowed by the operator: %v", err)
	}
}
