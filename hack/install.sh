#!/usr/bin/env bash
# Installs what the local stack and the build need and is missing:
# Debian packages, npm dependencies, and the Go-built tools (cached under $CACHE).
source "$(dirname "$0")/lib.sh"
PART=install

# command -> Debian package providing it
declare -A PKG=(
  [etcd]=etcd-server
  [dnsmasq]=dnsmasq-base
  [mcollectived]=mcollective
  [mco]=mcollective-client
  [puppet]=puppet-agent
  [xorriso]=xorriso
  [cloud-init]=cloud-init
  [lua5.1]=lua5.1
  [openssl]=openssl
  [curl]=curl
  [setsid]=util-linux
  [rabbitmq-server]=rabbitmq-server
)

missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${PKG[$cmd]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  # Keep package post-install scripts from starting daemons (dnsmasq on :53, mcollectived, ...):
  # the stack starts its own. Only remove the policy file if this script created it.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  mkdir -p "$CACHE"
  {
    timeout 600 apt-get update &&
      DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get install -y --no-install-recommends "${missing[@]}"
  } >"$CACHE/apt.log" 2>&1 || {
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
    fail_part apt-get "$CACHE/apt.log" "could not install ${missing[*]}"
  }
  [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

# npm dependencies, when the lock file changed since the last install.
if [ ! -f "$ROOT/node_modules/.package-lock.json" ] ||
  [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
  log "npm ci"
  (cd "$ROOT" && npm ci --no-audit --no-fund >"$CACHE/npm.log" 2>&1) ||
    fail_part npm "$CACHE/npm.log" "npm ci failed"
fi

command -v go >/dev/null || die "Go is needed to build kube-apiserver and vcsim; it is expected at /usr/local/go"

if [ ! -x "$KUBE_APISERVER_BIN" ]; then
  log "building kube-apiserver $KUBE_VERSION (once; cached at $KUBE_APISERVER_BIN)"
  mkdir -p "$CACHE"
  (cd "$ROOT/hack/kube-apiserver" &&
    CGO_ENABLED=0 timeout 3000 go build -trimpath -ldflags='-s -w' -o "$KUBE_APISERVER_BIN.tmp" k8s.io/kubernetes/cmd/kube-apiserver) \
    >"$CACHE/kube-apiserver-build.log" 2>&1 ||
    fail_part kube-apiserver-build "$CACHE/kube-apiserver-build.log" "build failed"
  mv "$KUBE_APISERVER_BIN.tmp" "$KUBE_APISERVER_BIN"
fi

# kubectl: the machine's own when it has one, otherwise built from the same module.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$CACHE/kubectl-$KUBE_VERSION" ]; then
  log "building kubectl $KUBE_VERSION (once)"
  (cd "$ROOT/hack/kube-apiserver" &&
    CGO_ENABLED=0 timeout 3000 go build -trimpath -ldflags='-s -w' -o "$CACHE/kubectl-$KUBE_VERSION.tmp" k8s.io/kubernetes/cmd/kubectl) \
    >"$CACHE/kubectl-build.log" 2>&1 ||
    fail_part kubectl-build "$CACHE/kubectl-build.log" "build failed"
  mv "$CACHE/kubectl-$KUBE_VERSION.tmp" "$CACHE/kubectl-$KUBE_VERSION"
fi

if [ ! -x "$GOVMOMI_BIN/vcsim" ] || [ ! -x "$GOVMOMI_BIN/govc" ]; then
  log "building vcsim and govc $GOVMOMI_VERSION (once)"
  mkdir -p "$GOVMOMI_BIN"
  GOBIN="$GOVMOMI_BIN" CGO_ENABLED=0 timeout 1800 go install -trimpath -ldflags='-s -w' \
    "github.com/vmware/govmomi/vcsim@$GOVMOMI_VERSION" "github.com/vmware/govmomi/govc@$GOVMOMI_VERSION" \
    >"$CACHE/govmomi-build.log" 2>&1 ||
    fail_part govmomi-build "$CACHE/govmomi-build.log" "build failed"
fi

log "all tools present"
