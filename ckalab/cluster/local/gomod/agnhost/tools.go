//go:build tools

// Package tools pins the command we build; it is never compiled.
package tools

import _ "k8s.io/kubernetes/test/images/agnhost"
