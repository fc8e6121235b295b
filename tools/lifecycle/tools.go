// This module exists so `make tools` can build the buildpacks lifecycle (cmd/lifecycle and
// cmd/launcher) at the exact version the offline builder ships. See ../../build/builder.

//go:build tools

package tools

import (
	_ "github.com/buildpacks/lifecycle/cmd/launcher"
	_ "github.com/buildpacks/lifecycle/cmd/lifecycle"
)
