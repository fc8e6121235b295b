// Command-less module: it exists so `make tools` can build Gitea from the Go module proxy for
// the forge tests (internal/testenv/gitea.go). See ../../Makefile. The imports are those of
// Gitea's main package, so that go mod tidy records every module its build needs.

//go:build tools

package tools

import (
	_ "code.gitea.io/gitea/cmd"
	_ "code.gitea.io/gitea/modules/markup/asciicast"
	_ "code.gitea.io/gitea/modules/markup/console"
	_ "code.gitea.io/gitea/modules/markup/csv"
	_ "code.gitea.io/gitea/modules/markup/markdown"
	_ "code.gitea.io/gitea/modules/markup/orgmode"
	_ "github.com/urfave/cli/v3"
)
