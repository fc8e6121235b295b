// Command-less module: it exists so `make tools` can build the Consul agent from the Go
// module proxy. See ../../Makefile and ../../../shared/DESIGN.md, "Environment facts".

//go:build tools

package tools

import _ "github.com/hashicorp/consul"
