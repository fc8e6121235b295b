package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// SourceTag names the image built from a source tree with a builder and a build
// environment: the same three give the same tag, so the registry itself remembers what was
// built, across restarts. builder should identify the builder's content (its image ID), not
// only its name.
func SourceTag(treeHash, builder string, env map[string]string) string {
	h := sha256.New()
	fmt.Fprintf(h, "tree=%s\nbuilder=%s\n", treeHash, builder)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "env %s=%s\n", k, env[k])
	}
	return sourceTagPrefix + hex.EncodeToString(h.Sum(nil))[:32]
}

// sourceTagPrefix starts every tag SourceTag makes: garbage collection deletes only images
// whose every tag starts so.
const sourceTagPrefix = "src-"

// BuildEnv is the part of a service's environment its build sees: the variables that
// configure buildpacks (BP_*). The rest is runtime configuration; changing it makes a new
// release without a build.
func BuildEnv(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		if strings.HasPrefix(k, "BP_") {
			out[k] = v
		}
	}
	return out
}

// Find looks for repo:tag in its registry and returns it pinned by digest; found is false
// when the tag does not exist.
func Find(ctx context.Context, repo, tag string) (pinned string, found bool, err error) {
	return find(ctx, authn.DefaultKeychain, repo, tag)
}

func find(ctx context.Context, keychain authn.Keychain, repo, tag string) (pinned string, found bool, err error) {
	ref, err := name.NewTag(repo+":"+tag, name.Insecure)
	if err != nil {
		return "", false, err
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain))
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("look up %s:%s: %w", repo, tag, err)
	}
	return repo + "@" + desc.Digest.String(), true, nil
}

// Resolve pins an image reference to the digest its tag points at now, so a release never
// changes under a moving tag. A reference pinned already is returned as it is.
//
// Resolve applies no registry policy and reaches any registry over plain HTTP: it is for
// references the operator wrote. References from repositories go through
// Registries.Resolve (Builder.Build does).
func Resolve(ctx context.Context, image string) (string, error) {
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("image %s: %w", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		return d.String(), nil
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return "", fmt.Errorf("resolve image %s: %w", image, err)
	}
	return ref.Context().Name() + "@" + desc.Digest.String(), nil
}
