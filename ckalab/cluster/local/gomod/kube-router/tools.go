//go:build tools

// Package tools pins the command we build; it is never compiled.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
