//go:build tools

// Package tools pins the command we build; it is never compiled.
package tools

import _ "go.etcd.io/etcd/etcdctl/v3"
