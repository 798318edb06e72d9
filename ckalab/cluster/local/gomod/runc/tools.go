//go:build tools

// Package tools pins the command we build; it is never compiled.
package tools

import _ "github.com/opencontainers/runc"
