//go:build tools

// Package tools pins the command we build; it is never compiled.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
