#!/usr/bin/env bash
# Installs what the local stack and the build need and is missing:
# Debian packages, npm dependencies, and the Go-built tools (cached under $CACHE). The Go builds
# run in the background while the rest installs.
source "$(dirname "$0")/lib.sh"
PART=install

command -v go >/dev/null || die "Go is needed to build kube-apiserver and vcsim; it is expected at /usr/local/go"

# go_build_cached NAME VERSION OUT DIR PKG TIMEOUT [LDFLAGS]: builds PKG of the module in DIR (its
# go.mod pins the version) into OUT, once. Half-built output is never taken as done: it is written
# to OUT.tmp.PID and moved into place (two installs at once: the last one wins, both work).
go_build_cached() {
  local name="$1" version="$2" out="$3" dir="$4" pkg="$5" seconds="$6" ldflags="${7:-}"
  [ -x "$out" ] && return 0
  log "building $name $version (once; cached at $out)"
  mkdir -p "$(dirname "$out")"
  (cd "$dir" && CGO_ENABLED=0 timeout "$seconds" go build -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp.$$" "$pkg") \
    >"$CACHE/$name-build.log" 2>&1 ||
    fail_part "$name-build" "$CACHE/$name-build.log" "build failed"
  mv "$out.tmp.$$" "$out"
}

# The version a release build stamps in (make's hack/lib/version.sh does it from git): built from
# the module, /version would say v0.0.0-master+$Format:%H$, which kubectl cannot parse.
KUBE_MINOR="${KUBE_VERSION#v1.}"
KUBE_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_MINOR%%.*} \
  -X k8s.io/component-base/version.gitTreeState=clean"

build_kube_apiserver() {
  go_build_cached kube-apiserver "$KUBE_VERSION" "$KUBE_APISERVER_BIN" "$ROOT/hack/kube-apiserver" \
    k8s.io/kubernetes/cmd/kube-apiserver 3000 "$KUBE_LDFLAGS"
}

# etcd from its Go module (hack/etcd/go.mod pins it), not Debian's 3.4: the API server streams
# a list as a watch (sendInitialEvents), and serves consistent lists from its cache, only on an
# etcd that sends progress notifications on request (3.5.13 or newer).
build_etcd() {
  go_build_cached etcd "$ETCD_VERSION" "$ETCD_BIN" "$ROOT/hack/etcd" go.etcd.io/etcd/server/v3 1800
}

# kubectl of the API server's own version, from the same module, first on the stack's PATH: a
# machine's kubectl may be several minors away (this kind ships Google Cloud SDK's 1.32), outside
# the one minor of skew kubectl supports.
build_kubectl() {
  go_build_cached kubectl "$KUBE_VERSION" "$KUBECTL_DIR/kubectl" "$ROOT/hack/kube-apiserver" \
    k8s.io/kubernetes/cmd/kubectl 3000 "$KUBE_LDFLAGS"
}

# vcsim and govc from govmomi's module source, vcsim with one fix that is upstream but in no
# release yet (v0.53.0 lacks it): Registry.WithLock releases its object lock when the call it
# guards panics. Without it one panic (vcsim's FindChild meeting a VM whose name a concurrent
# create is still writing) leaves SearchIndex locked, and every later FindChild, so every
# CreateVM of vsop, hangs until vcsim restarts.
build_govmomi() {
  if [ ! -x "$GOVMOMI_BIN/vcsim" ] || [ ! -x "$GOVMOMI_BIN/govc" ]; then
    log "building vcsim and govc $GOVMOMI_VERSION (once; vcsim patched: a lock released on panic)"
    src="$CACHE/govmomi-src.$$"
    {
      dir="$(cd / && timeout 600 go mod download -json "github.com/vmware/govmomi@$GOVMOMI_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" &&
        [ -d "$dir" ] && cp -r "$dir" "$src" && chmod -R u+w "$src" &&
        perl -0pi -e 's/(\tunlock := r\.AcquireLock\(onBehalfOf, obj\)\n)\tf\(\)\n\tunlock\(\)\n/$1\tdefer unlock()\n\tf()\n/' \
          "$src/simulator/registry.go" &&
        grep -q $'^\tdefer unlock()$' "$src/simulator/registry.go" &&
        mkdir -p "$GOVMOMI_BIN" &&
        (cd "$src" && CGO_ENABLED=0 timeout 1800 go build -trimpath -ldflags='-s -w' -o "$GOVMOMI_BIN/vcsim.tmp.$$" ./vcsim &&
          CGO_ENABLED=0 timeout 1800 go build -trimpath -ldflags='-s -w' -o "$GOVMOMI_BIN/govc.tmp.$$" ./govc) &&
        mv "$GOVMOMI_BIN/vcsim.tmp.$$" "$GOVMOMI_BIN/vcsim" && mv "$GOVMOMI_BIN/govc.tmp.$$" "$GOVMOMI_BIN/govc"
    } >"$CACHE/govmomi-build.log" 2>&1 || {
      rm -rf "$src"
      fail_part govmomi-build "$CACHE/govmomi-build.log" "build failed"
    }
    rm -rf "$src"
  fi
}

# helm, for `make release` and the chart tests: no Debian package has it, so it is built from
# the Go module proxy like the tools above (once; cached). The -X flags are those of helm's own
# Makefile: its version, and the Kubernetes version of its client-go (v0.37 in helm v3.22.0) for
# .Capabilities and lint's deprecation rules (1.20 otherwise). helm v3.22 needs Go 1.26: an older
# go fetches that toolchain through the module proxy (GOTOOLCHAIN=auto). hack/release.sh and the
# tests read HELM_VERSION from here.
HELM_VERSION="v3.22.0"
HELM_KUBE_MINOR="37"
HELM_BIN="$CACHE/helm-$HELM_VERSION"
HELM_PID="$CACHE/helm-build.pid"
helm_building() { pid_file_alive "$HELM_PID"; }
# One build at a time: a make release waits for the one make test started in the background.
build_helm() {
  while helm_building; do sleep 2; done
  build_helm_once
}
build_helm_once() {
  if [ ! -x "$HELM_BIN" ]; then
    log "building helm $HELM_VERSION (once; cached at $HELM_BIN)"
    mkdir -p "$CACHE/helm-build"
    helm_x=""
    for pkg in pkg/chartutil pkg/lint/rules; do
      helm_x+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
    done
    GOBIN="$CACHE/helm-build" GOFLAGS=-trimpath CGO_ENABLED=0 GOTOOLCHAIN=auto timeout 1800 go install \
      -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION$helm_x" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$CACHE/helm-build.log" 2>&1 ||
      fail_part helm-build "$CACHE/helm-build.log" "build failed"
    mv "$CACHE/helm-build/helm" "$HELM_BIN" && rmdir "$CACHE/helm-build"
  fi
}

# VSOP_HELM=later (make test): helm is built in the background once the rest is there, not
# before. Only the chart's tests need it, and they run last; as the last Go build of a cold
# install (2.8 min on 2 cores) it held up the stack and every test.
helm_now() { [ "${VSOP_HELM:-}" = later ] || build_helm; }

# The Go builds need neither apt nor npm: they start first and run beside them (one after the
# other: two at once measured slower, both compile on every core). A failing build has already
# said which part and which log.
(build_kube_apiserver && build_etcd && build_kubectl && build_govmomi && helm_now) &
go_builds=$!
# Should the rest fail, the builds stop too (their .tmp outputs are never taken as done).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
trap 'rc=$?; [ "$rc" -eq 0 ] || kill_tree "$go_builds"' EXIT

# command -> Debian package providing it
declare -A PKG=(
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
  [promtool]=prometheus
  [puppetserver]=puppetserver
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

# Node.js 24: the machine's node when it is 24 or newer, otherwise the npm registry's binary
# package unpacked into the cache (once). npm itself stays the machine's: it runs on either.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ ! -x "$NODE_DIR/bin/node" ] && [ "$(node_major "$(command -v node || echo node)")" -lt 24 ]; then
  case "$(uname -m)" in
    x86_64) node_arch=x64 ;;
    aarch64) node_arch=arm64 ;;
    *) die "no Node.js $NODE_VERSION binary package for $(uname -m)" ;;
  esac
  log "fetching Node.js $NODE_VERSION (node-linux-$node_arch from the npm registry; once)"
  mkdir -p "$CACHE"
  tmp="$(mktemp -d)"
  {
    timeout 600 npm pack --silent --pack-destination "$tmp" "node-linux-$node_arch@$NODE_VERSION" &&
      tar -xzf "$tmp"/node-linux-*.tgz -C "$tmp" &&
      mkdir -p "$NODE_DIR.tmp.$$/bin" && mv "$tmp/package/bin/node" "$NODE_DIR.tmp.$$/bin/node" &&
      [ "$(node_major "$NODE_DIR.tmp.$$/bin/node")" = 24 ] &&
      { mv -T "$NODE_DIR.tmp.$$" "$NODE_DIR" 2>/dev/null || rm -rf "$NODE_DIR.tmp.$$"; } # another install won
  } >"$CACHE/node-fetch.log" 2>&1 || {
    rm -rf "$tmp" "$NODE_DIR.tmp.$$"
    fail_part node-fetch "$CACHE/node-fetch.log" "could not fetch Node.js $NODE_VERSION"
  }
  rm -rf "$tmp"
fi
command -v node >/dev/null && [ "$(node_major node)" -ge 24 ] ||
  die "Node.js 24 is needed (found $(node --version 2>/dev/null || echo none))"

# npm dependencies, when the lock file changed since the last install.
if [ ! -f "$ROOT/node_modules/.package-lock.json" ] ||
  [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
  log "npm ci"
  (cd "$ROOT" && npm ci --no-audit --no-fund >"$CACHE/npm.log" 2>&1) ||
    fail_part npm "$CACHE/npm.log" "npm ci failed"
fi

# puppetserver's Clojure code compiled ahead of time, once (see puppetserver_aot_dir in lib.sh):
# the stack's master then starts in about half a minute instead of a minute and a half. Without
# it the master still starts, only slower.
AOT_DIR="$(puppetserver_aot_dir)"
if [ -f /usr/share/puppetserver/puppetserver.jar ] && [ ! -d "$AOT_DIR" ]; then
  log "compiling puppetserver's Clojure code ahead of time (once; cached at $AOT_DIR)"
  tmp="$AOT_DIR.tmp.$$"
  mkdir -p "$tmp/classes"
  services="$(grep -hv '^#' /etc/puppet/puppetserver/services.d/*.cfg | sed 's#/.*##' | sort -u | tr '\n' ' ')"
  printf '(binding [*compile-path* "%s"] (doseq [n (quote [puppetlabs.trapperkeeper.main %s])] (compile n)))\n' \
    "$tmp/classes" "$services" >"$tmp/compile.clj"
  if (cd /usr/share/puppetserver && timeout 900 java -Xmx768m -XX:TieredStopAtLevel=1 -Djruby.lib=/usr/share/jruby/lib \
    -cp "/usr/share/puppetserver/puppetserver.jar:$tmp/classes" clojure.main "$tmp/compile.clj") \
    >"$CACHE/puppetserver-aot.log" 2>&1; then
    mv -T "$tmp" "$AOT_DIR" 2>/dev/null || rm -rf "$tmp" # another install finished first
  else
    log "WARNING: compiling puppetserver ahead of time failed (see $CACHE/puppetserver-aot.log); the master starts slower"
    rm -rf "$tmp"
  fi
fi

wait "$go_builds" || die "a Go-built tool is missing (see the error above)"
if [ ! -x "$HELM_BIN" ]; then
  if ! helm_building; then
    log "building helm $HELM_VERSION in the background (log: $CACHE/helm-build.log; the chart's tests wait for it)"
    # Detached from make's output, so that nothing waits on its pipe; the tests that need helm
    # wait for the binary while this pid lives (test/support/helm.ts).
    ( (build_helm_once); rm -f "$HELM_PID") </dev/null >/dev/null 2>&1 &
    echo $! >"$HELM_PID"
  fi
  log "all tools present but helm, which is being built"
else
  log "all tools present"
fi
