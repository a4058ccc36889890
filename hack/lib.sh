# Shared helpers for the local stack scripts. Source it; do not run it.
# Every wait has a timeout and every failure names the part and its log.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${VSOP_STACK_DIR:-$ROOT/.stack}"
CACHE="${VSOP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vsop}"
LOGS="$STACK/logs"
PIDS="$STACK/pids"

# Pinned versions of what the stack builds with Go.
KUBE_VERSION="v1.37.2"
GOVMOMI_VERSION="v0.46.3"

# -v: with its version stamped in (hack/install.sh)
KUBE_APISERVER_BIN="$CACHE/kube-apiserver-$KUBE_VERSION-v"
# etcd's version is the one hack/etcd/go.mod pins.
ETCD_VERSION="$(sed -n 's#^require go.etcd.io/etcd/server/v3 \(v[0-9.]*\)$#\1#p' "$ROOT/hack/etcd/go.mod")"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION"
# -p1: vcsim built with the patch in hack/install.sh (a lock released on panic)
GOVMOMI_BIN="$CACHE/govmomi-$GOVMOMI_VERSION-p1"

# vsop runs on Node.js 24 LTS. A machine with an older node gets this one from the npm
# registry's binary package (node-linux-<arch>) in the cache; the Makefile puts it first on PATH.
NODE_VERSION="24.21.0"
NODE_DIR="$CACHE/node-v$NODE_VERSION"

# kubectl of the API server's version, which hack/install.sh builds, before the machine's own.
KUBECTL_DIR="$CACHE/kubectl-$KUBE_VERSION-v"

export PATH="$NODE_DIR/bin:$KUBECTL_DIR:/usr/local/go/bin:$PATH"

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${PART:-stack}" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# fail_part NAME LOG MESSAGE: stop with the part's name, the path of its log and its last lines.
fail_part() {
  local name="$1" logfile="$2" msg="$3"
  log "ERROR: $name $msg; see $logfile"
  if [ -f "$logfile" ]; then tail -n 20 "$logfile" | sed 's/^/    | /' >&2; fi
  exit 1
}

# wait_until TIMEOUT_SECONDS DESCRIPTION COMMAND...: poll COMMAND every half second.
wait_until() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port PREFERRED: the preferred port when nothing listens there, otherwise a free one.
pick_port() {
  local want="$1"
  if port_free "$want"; then
    echo "$want"
    return
  fi
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# pid_file_alive FILE: FILE names a running process. pid_alive NAME: the stack's part NAME runs.
pid_file_alive() { [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }
pid_alive() { pid_file_alive "$PIDS/$1.pid"; }

# start_bg NAME COMMAND...: run COMMAND in the background with its own log and pid file.
start_bg() {
  local name="$1"
  shift
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

# Debian's puppetserver ships Clojure sources that the JVM would compile on every start (about a
# minute on two cores); hack/install.sh compiles them once into this directory (keyed by the
# installed packages), and hack/puppetserver.sh puts it first on the classpath.
puppetserver_aot_dir() {
  local key
  key="$(dpkg-query -W -f '${Package} ${Version}\n' puppetserver jruby 'lib*-clojure' 2>/dev/null |
    sha256sum | cut -c1-12)"
  echo "$CACHE/puppetserver-aot-$key"
}
