#!/usr/bin/env bash
# Starts the local stack (etcd, kube-apiserver, vcsim, dnsmasq, RabbitMQ, the Puppet master) and
# writes .stack/env.
# Each part gets a log in .stack/logs and a pid file in .stack/pids; stack-down stops only those.
source "$(dirname "$0")/lib.sh"

"$ROOT/hack/install.sh"

if [ -f "$STACK/env" ] && pid_alive etcd && pid_alive kube-apiserver && pid_alive vcsim && pid_alive dnsmasq &&
  pid_alive puppetserver; then
  # A stack from before broker TLS: add the TLS listeners and the nodes' TLS config to it.
  if [ ! -f "$STACK/broker.env" ]; then
    "$ROOT/hack/broker-tls.sh"
    "$ROOT/hack/mcollective-setup.sh"
  fi
  log "stack already up; source $STACK/env"
  exit 0
fi
"$ROOT/hack/stack-down.sh" >/dev/null 2>&1 || true
rm -rf "$STACK"
mkdir -p "$STACK" "$LOGS" "$PIDS"
trap 'log "stack-up failed; stopping what it started"; "$ROOT/hack/stack-down.sh" >/dev/null 2>&1 || true' ERR

# --- certificates -------------------------------------------------------------------------------
PART=certs
PKI="$STACK/pki"
mkdir -p "$PKI"
ossl() { openssl "$@" >>"$LOGS/certs.log" 2>&1 || fail_part certs "$LOGS/certs.log" "openssl $1 failed"; }
new_ca() { # new_ca NAME CN
  ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$2" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
}
new_cert() { # new_cert CA NAME SUBJECT EXTFILE-LINES
  local ca="$1" name="$2" subj="$3" ext="$4"
  printf '%b\n' "$ext" >"$PKI/$name.ext"
  ossl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$PKI/$name.key" -out "$PKI/$name.csr"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 30 -out "$PKI/$name.crt" -extfile "$PKI/$name.ext"
}
new_ca ca vsop-stack-kubernetes-ca
new_cert ca apiserver "/CN=kube-apiserver" \
  "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth"
new_cert ca admin "/O=system:masters/CN=vsop-stack-admin" "extendedKeyUsage=clientAuth"
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
new_ca vcsim-ca vsop-stack-vcsim-ca
new_cert vcsim-ca vcsim "/CN=vcsim" "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"

# --- the Puppet master: its JVM starts first and warms up while the rest starts -------------------
"$ROOT/hack/puppetserver.sh" start

# --- etcd ---------------------------------------------------------------------------------------
PART=etcd
ETCD_PORT=$(pick_port 23790)
ETCD_PEER_PORT=$(pick_port 23800)
log "starting on 127.0.0.1:$ETCD_PORT"
start_bg etcd "$ETCD_BIN" --name vsop-stack --data-dir "$STACK/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "vsop-stack=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes 2147483648
wait_until 30 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health" ||
  fail_part etcd "$LOGS/etcd.log" "did not become healthy within 30s"

# --- kube-apiserver -----------------------------------------------------------------------------
PART=kube-apiserver
KUBE_PORT=$(pick_port 16443)
log "starting on https://127.0.0.1:$KUBE_PORT"
cat >"$STACK/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
EOF
# No endpoint reconciler: nothing here runs in a pod to reach the `kubernetes` Service, and since
# Kubernetes 1.37 (at least) the reconciler refuses a loopback advertise address.
start_bg kube-apiserver "$KUBE_APISERVER_BIN" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_PORT" \
  --endpoint-reconciler-type none \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --authorization-mode RBAC --service-cluster-ip-range 10.96.0.0/16 \
  --audit-policy-file "$STACK/audit-policy.yaml" --audit-log-path "$LOGS/audit.log" \
  --audit-log-format json --audit-log-mode blocking \
  --enable-priority-and-fairness=false --watch-cache=true --profiling=false --v=1
cat >"$STACK/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vsop-stack
  cluster:
    server: https://127.0.0.1:$KUBE_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: vsop-stack-admin
  user:
    client-certificate: $PKI/admin.crt
    client-key: $PKI/admin.key
contexts:
- name: vsop-stack
  context: { cluster: vsop-stack, user: vsop-stack-admin }
current-context: vsop-stack
EOF
wait_until 90 "kube-apiserver /readyz" curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "https://127.0.0.1:$KUBE_PORT/readyz" ||
  fail_part kube-apiserver "$LOGS/kube-apiserver.log" "did not become ready within 90s"
wait_until 60 "the default namespace" kubectl --kubeconfig "$STACK/kubeconfig" get namespace default ||
  fail_part kube-apiserver "$LOGS/kube-apiserver.log" "did not create the default namespace within 60s"

# --- vcsim + govc -------------------------------------------------------------------------------
PART=vcsim
VC_PORT=$(pick_port 18989)
VC_USER=vsop
VC_PASSWORD="$(openssl rand -hex 12)"
log "starting on https://127.0.0.1:$VC_PORT"
start_bg vcsim "$GOVMOMI_BIN/vcsim" -l "127.0.0.1:$VC_PORT" \
  -tlscert "$PKI/vcsim.crt" -tlskey "$PKI/vcsim.key" -username "$VC_USER" -password "$VC_PASSWORD" \
  -dc 1 -cluster 1 -host 2 -standalone-host 0 -vm 1 -ds 1 -pg 1
export GOVC_URL="https://127.0.0.1:$VC_PORT/sdk" GOVC_USERNAME="$VC_USER" GOVC_PASSWORD="$VC_PASSWORD"
export GOVC_TLS_CA_CERTS="$PKI/vcsim-ca.crt"
wait_until 30 "vcsim login" "$GOVMOMI_BIN/govc" about ||
  fail_part vcsim "$LOGS/vcsim.log" "did not answer govc within 30s"
for pg in Boot-VLAN VLAN-10 VLAN-30; do
  "$GOVMOMI_BIN/govc" dvs.portgroup.add -dvs DVS0 -type earlyBinding -nports 32 "$pg" >>"$LOGS/vcsim.log" 2>&1 ||
    fail_part vcsim "$LOGS/vcsim.log" "could not add port group $pg"
done

# --- dnsmasq ------------------------------------------------------------------------------------
PART=dnsmasq
DNS_PORT=$(pick_port 15353)
mkdir -p "$STACK/dns"
cp "$ROOT/hack/dns-hosts" "$STACK/dns/hosts"
log "starting on 127.0.0.1:$DNS_PORT"
start_bg dnsmasq dnsmasq --keep-in-foreground --conf-file=/dev/null --port="$DNS_PORT" \
  --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --local=/example.test/ --local=/example.com/ \
  --addn-hosts="$STACK/dns/hosts" --log-queries --log-facility=- --user=root
dns_ok() { [ "$(node "$ROOT/hack/dns-query.mjs" "127.0.0.1:$DNS_PORT" web-prod-1.example.test)" = 10.12.30.20 ]; }
wait_until 15 "dnsmasq answering" dns_ok || fail_part dnsmasq "$LOGS/dnsmasq.log" "did not answer within 15s"

# --- RabbitMQ -----------------------------------------------------------------------------------
# The machine's broker (or one started for the stack) with AMQP and STOMP TLS listeners signed by
# the stack's broker CA; writes $STACK/broker.env. Safe to run alone: hack/broker-tls.sh.
"$ROOT/hack/broker-tls.sh"
source "$STACK/broker.env"

"$ROOT/hack/mcollective-setup.sh"

# Bounded wait for the master started above; writes $STACK/puppet.env.
"$ROOT/hack/puppetserver.sh" wait

# --- the env file -------------------------------------------------------------------------------
PART=stack
cat >"$STACK/env" <<EOF
# Written by hack/stack-up.sh; source it to talk to the local stack.
export VSOP_STACK_DIR="$STACK"
export KUBECONFIG="$STACK/kubeconfig"
export VSOP_KUBE_CA="$PKI/ca.crt"
export VSOP_AUDIT_LOG="$LOGS/audit.log"
export GOVC_URL="$GOVC_URL"
export GOVC_USERNAME="$GOVC_USERNAME"
export GOVC_PASSWORD="$GOVC_PASSWORD"
export GOVC_TLS_CA_CERTS="$GOVC_TLS_CA_CERTS"
# govc's default datastore: tests add datastores vcsim cannot remove (a datastore cluster's).
export GOVC_DATASTORE=LocalDS_0
export VSOP_GOVC="$GOVMOMI_BIN/govc"
export VSOP_VCSIM_PORT="$VC_PORT"
export VSOP_MCO_DIR="$STACK/mcollective"
export VSOP_MCO_CLIENT_CONFIG="$STACK/mcollective/client.cfg"
export VSOP_DNS_SERVER="127.0.0.1:$DNS_PORT"
export VSOP_DNS_HOSTS_FILE="$STACK/dns/hosts"
export VSOP_DNS_PIDFILE="$PIDS/dnsmasq.pid"
export PATH="$GOVMOMI_BIN:$KUBECTL_DIR:\$PATH"
EOF
cat "$STACK/broker.env" "$STACK/puppet.env" >>"$STACK/env"
trap - ERR
log "stack is up: source $STACK/env"
