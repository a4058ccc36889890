#!/usr/bin/env bash
# Stops one simulated server started by hack/node-up.sh (only its mcollectived and the Puppet
# run it may have started); its state in .stack/nodes/FQDN/ stays for inspection.
# Usage: hack/node-down.sh FQDN
source "$(dirname "$0")/lib.sh"
fqdn="${1:-}"
[ -n "$fqdn" ] || die "usage: hack/node-down.sh FQDN"
PART="node $fqdn"
name="mco-$fqdn"

stop_group() { # stop_group PID: TERM its process group, KILL what is left after 10 seconds.
  local pid="$1"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# A Puppet run the agent started lives in its own process group.
runpid="$STACK/nodes/$fqdn/puppet-run.pid"
if [ -f "$runpid" ] && grep -qs puppet "/proc/$(cat "$runpid")/cmdline"; then
  stop_group "$(cat "$runpid")"
fi
rm -f "$runpid"
if [ -f "$PIDS/$name.pid" ]; then
  stop_group "$(cat "$PIDS/$name.pid")"
  rm -f "$PIDS/$name.pid"
  log "stopped"
else
  log "not running"
fi
