//go:build tools

// Keeps go.etcd.io/etcd/server/v3 (etcd's main package) in go.mod; hack/install.sh builds it.
package tools

import _ "go.etcd.io/etcd/server/v3"
