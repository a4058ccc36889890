#!/usr/bin/env bash
# Starts one simulated server: an mcollectived with identity FQDN, the project's puppet agent
# plugin, and `puppet apply` of MANIFEST as its Puppet run, all state in .stack/nodes/FQDN/.
# Usage: hack/node-up.sh FQDN [MANIFEST]   (MANIFEST: a path, or a name in hack/manifests/)
# IDENTITY_KEY=FILE: the server's own identity key, as vsop's one-time bootstrap handed it out;
# without it the node signs nothing of its own (like a server vsop did not install).
# PUPPET_MASTER=1: the node's Puppet run is `puppet agent --onetime --no-daemonize` against the
# stack's master (.stack/puppet.env) instead of puppet apply, with its own ssldir; CSR_ATTRIBUTES=FILE
# is its csr_attributes.yaml (the one-time challenge and trusted facts from vsop's bootstrap).
source "$(dirname "$0")/lib.sh"
PART=node-up

fqdn="${1:-}"
[[ "$fqdn" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || die "usage: hack/node-up.sh FQDN [MANIFEST]"
manifest="${2:-$ROOT/hack/manifests/default.pp}"
for candidate in "$manifest" "$ROOT/$manifest" "$ROOT/hack/manifests/$manifest" "$ROOT/hack/manifests/$manifest.pp"; do
  if [ -f "$candidate" ]; then
    manifest="$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")"
    break
  fi
done
[ -f "$manifest" ] || die "no manifest $manifest"

MCO="$STACK/mcollective"
[ -f "$MCO/client.cfg" ] || die "$MCO/client.cfg is missing: start the stack first (make stack-up)"
PART="node $fqdn"
name="mco-$fqdn"
logfile="$LOGS/$name.log"
node="$STACK/nodes/$fqdn"

if pid_alive "$name"; then
  log "already running (pid $(cat "$PIDS/$name.pid"))"
  exit 0
fi

# A fresh state directory, so that nothing from an earlier run of this node lingers.
rm -rf "$node"
mkdir -p "$node/var" "$LOGS"
: >"$LOGS/puppet-$fqdn.log"
if [ -n "${IDENTITY_KEY:-}" ]; then
  [ -f "$IDENTITY_KEY" ] || die "IDENTITY_KEY=$IDENTITY_KEY is not a file"
  install -m 600 "$IDENTITY_KEY" "$node/identity.pem"
fi
what="$(basename "$manifest")"
[ "${PUPPET_MASTER:-}" = 1 ] && what=master
printf -- '---\nfqdn: %s\nvsop_manifest: %s\n' "$fqdn" "$what" >"$node/facts.yaml"

# The node's Puppet run: puppet apply with its own vardir, summary and run lock, and the node
# directory handed to the manifest as the fact vsop_node_dir. Against the master: puppet agent
# with a confdir of its own (certificate, key, csr_attributes.yaml), as an installed server runs it.
state="$node/var/state"
if [ "${PUPPET_MASTER:-}" = 1 ]; then
  [ -f "$STACK/puppet.env" ] || die "no Puppet master in this stack ($STACK/puppet.env)"
  source "$STACK/puppet.env"
  mkdir -p "$node/puppet"
  if [ -n "${CSR_ATTRIBUTES:-}" ]; then
    [ -f "$CSR_ATTRIBUTES" ] || die "CSR_ATTRIBUTES=$CSR_ATTRIBUTES is not a file"
    install -m 600 "$CSR_ATTRIBUTES" "$node/puppet/csr_attributes.yaml"
  fi
  cat >"$node/puppet/puppet.conf" <<CONF
# Written by hack/node-up.sh for $fqdn: an agent of the stack's master.
[main]
certname = $fqdn
server = localhost
serverport = $VSOP_PUPPET_PORT
ssldir = $node/puppet/ssl
vardir = $node/var
logdir = $node/var/log
rundir = $node/var/run
lastrunfile = $node/last_run_summary.yaml
csr_attributes = $node/puppet/csr_attributes.yaml
keylength = 2048
[agent]
# No certificate yet and none signed at once: the run ends (vsop's autosign answers at once).
waitforcert = 0
usecacheonfailure = false
CONF
  command="env FACTER_vsop_node_dir=$node puppet agent --onetime --no-daemonize --color=false"
  command+=" --confdir $node/puppet"
else
  command="env FACTER_vsop_node_dir=$node puppet apply --color=false --certname $fqdn"
  command+=" --vardir $node/var --logdir $node/var/log --rundir $node/var/run"
  command+=" --lastrunfile $node/last_run_summary.yaml $manifest"
fi

cat >"$node/server.cfg" <<CFG
# Written by hack/node-up.sh for $fqdn
identity = $fqdn
main_collective = mcollective
collectives = mcollective
libdir = $MCO/lib
logger_type = console
loglevel = info
color = 0
daemonize = 0
registerinterval = 0
classesfile = $node/classes.txt
factsource = yaml
plugin.yaml = $node/facts.yaml
securityprovider = ssl
plugin.ssl_server_private = $MCO/server-private.pem
plugin.ssl_server_public = $MCO/server-public.pem
plugin.ssl_client_cert_dir = $MCO/clients
plugin.puppet.command = $command
plugin.puppet.lastrunfile = $node/last_run_summary.yaml
plugin.puppet.lockfile = $state/agent_catalog_run.lock
plugin.puppet.disable_lockfile = $state/agent_disabled.lock
plugin.puppet.pidfile = $node/puppet-run.pid
plugin.puppet.run_log = $LOGS/puppet-$fqdn.log
plugin.vsop.identity_key = $node/identity.pem
CFG
cat "$MCO/connector.cfg" >>"$node/server.cfg"

log "starting mcollectived (Puppet: $what, log $logfile)"
start_bg "$name" mcollectived --config "$node/server.cfg" --no-daemonize

answers() { # no pipe into grep -q: mco would die of SIGPIPE and pipefail fail the check
  local out
  out="$(mco ping --config "$MCO/client.cfg" -I "$fqdn" -t 2 2>/dev/null)" || return 1
  [[ "$out" == *"$fqdn "* ]]
}
if ! wait_until 30 "$fqdn to answer mco ping" answers; then
  "$ROOT/hack/node-down.sh" "$fqdn" >/dev/null 2>&1 || true
  fail_part "$fqdn" "$logfile" "did not answer mco ping within 30s"
fi
log "up: mco ping --config $MCO/client.cfg -I $fqdn"
