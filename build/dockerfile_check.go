package build

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// dockerfilePolicy is what a Dockerfile may make the engine fetch. The engine's classic
// builder fetches `ADD <url>` and pulls missing base images itself, from the host's
// network, whatever network its RUN steps are on: so those are checked here, before the
// build, on the Dockerfile as the engine will read it.
type dockerfilePolicy struct {
	// urls lets ADD fetch URLs.
	urls bool
	// registries is where base images may be pulled from.
	registries Registries
	// inEngine says whether the engine holds an image already (it is then not pulled).
	inEngine func(ctx context.Context, ref string) bool
	// lookup resolves a registry's host name (net.DefaultResolver's by default).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// checkDockerfile refuses a Dockerfile that would make the engine reach out of the build:
// an ADD of a URL (unless allowed), an ADD whose source the engine would expand from a
// variable, a base image (FROM, COPY --from, in ONBUILD too) it would pull from a
// registry the policy refuses, and heredocs (the classic builder does not know them, and
// a parser that did would read differently from the engine). The error names the line.
func checkDockerfile(ctx context.Context, text []byte, buildArgs map[string]string, p dockerfilePolicy) error {
	res, err := parser.Parse(bytes.NewReader(text))
	if err != nil {
		return &dockerfileError{msg: "Dockerfile: " + err.Error()}
	}
	lex := shell.NewLex(res.EscapeToken)
	fail := func(n *parser.Node, format string, args ...any) error {
		return &dockerfileError{msg: fmt.Sprintf("Dockerfile line %d: %s: %s", n.StartLine, strings.TrimSpace(n.Original), fmt.Sprintf(format, args...))}
	}

	// ARGs before the first FROM may name base images; build args override their defaults.
	var meta []string
	stages := map[string]bool{}
	seenFrom := false
	for _, n := range res.AST.Children {
		inst, inner := n, n
		if strings.EqualFold(n.Value, "onbuild") {
			if n.Next == nil || len(n.Next.Children) == 0 {
				return fail(n, "ONBUILD without an instruction")
			}
			inner = n.Next.Children[0]
		}
		if len(inst.Heredocs) > 0 || len(inner.Heredocs) > 0 {
			return fail(n, "heredocs are not supported by the engine's classic builder")
		}
		switch strings.ToLower(inner.Value) {
		case "arg":
			if !seenFrom && inst == inner {
				for a := inner.Next; a != nil; a = a.Next {
					k, v, _ := strings.Cut(a.Value, "=")
					if bv, ok := buildArgs[k]; ok {
						v = bv
					}
					meta = append(meta, k+"="+v)
				}
			}
		case "from":
			seenFrom = true
			if inner.Next == nil {
				return fail(n, "FROM names no image")
			}
			if err := p.checkImage(ctx, lex, meta, stages, inner.Next.Value); err != nil {
				return fail(n, "%v", err)
			}
			if as := inner.Next.Next; as != nil && strings.EqualFold(as.Value, "as") && as.Next != nil {
				stages[strings.ToLower(as.Next.Value)] = true
			}
		case "copy":
			for _, f := range inner.Flags {
				if from, ok := strings.CutPrefix(f, "--from="); ok {
					if _, err := strconv.Atoi(from); err == nil {
						continue // a stage by index
					}
					if err := p.checkImage(ctx, lex, meta, stages, from); err != nil {
						return fail(n, "%v", err)
					}
				}
			}
		case "add":
			var args []string
			for a := inner.Next; a != nil; a = a.Next {
				args = append(args, a.Value)
			}
			if len(args) < 2 {
				continue // the engine refuses it
			}
			for _, src := range args[:len(args)-1] {
				lower := strings.ToLower(src)
				switch {
				case strings.Contains(lower, "://") || strings.HasPrefix(lower, "git@"):
					if !p.urls {
						return fail(n, "ADD of a URL is refused: the engine fetches it from the host's network (download it into the repository and COPY it, or set builds.dockerfile_urls)")
					}
				case strings.ContainsRune(src, '$') || strings.ContainsRune(src, res.EscapeToken):
					if !p.urls {
						return fail(n, "ADD of a source with a variable or an escape is refused: the engine could expand it to a URL (use COPY)")
					}
				}
			}
		}
	}
	return nil
}

// checkImage refuses a base image the engine would pull from a registry the policy refuses.
// An image the engine holds is not pulled, so it passes as it is.
func (p dockerfilePolicy) checkImage(ctx context.Context, lex *shell.Lex, meta []string, stages map[string]bool, image string) error {
	if strings.ContainsAny(image, "$") {
		expanded, _, err := lex.ProcessWord(image, shell.EnvsFromSlice(meta))
		if err != nil {
			return fmt.Errorf("image %s: %w", image, err)
		}
		image = expanded
	}
	if image == "" {
		return fmt.Errorf("no image named")
	}
	if strings.EqualFold(image, "scratch") || stages[strings.ToLower(image)] {
		return nil
	}
	if p.inEngine != nil && p.inEngine(ctx, image) {
		return nil
	}
	ref, err := p.registries.Check(image)
	if err != nil {
		return err
	}
	registry := ref.Context().RegistryStr()
	if p.registries.listed(registry) {
		return nil
	}
	// The engine resolves the name and pulls: a name that resolves to a private address
	// is refused here (the engine resolves it again; see docs/security.md).
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	lookup := p.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	addrs, err := lookup(ctx, host)
	if err != nil {
		return fmt.Errorf("image %s: registry %s: %w", image, registry, err)
	}
	for _, a := range addrs {
		if why := privateAddr(a); why != "" {
			return &PolicyError{Image: image, Registry: registry, Why: "its name resolves to " + why}
		}
	}
	return nil
}
