#!/usr/bin/env bash
# make demo: the whole workflow on the local stack. Installs what is missing, starts the stack,
# builds and runs the operator, applies deploy/samples/ (pointed at the local stack), plays the
# booted server (fetches its kickstart, reports /built, starts its mcollectived), waits for
# Ready and shows the result. Leaves it all running; `make demo-down` stops it.
source "$(dirname "$0")/lib.sh"
PART=demo
DEMO="$STACK/demo"
STAGES=8
stage_no=0
stage_log="$LOGS/demo.log"
stage() {
  stage_no=$((stage_no + 1))
  stage_name="$1"
  log "[$stage_no/$STAGES] $1"
}
trap 'log "demo failed at stage $stage_no ($stage_name); see $stage_log and $LOGS/"' ERR

# follow_phase TIMEOUT PHASE: wait until web-prod-1 reaches PHASE, printing every change of its
# phase and Ready reason/message on the way ("phase: Installing (Installing: ...)"), so a wait of
# minutes shows what vsop is doing instead of silence.
last_seen=""
follow_phase() {
  local timeout="$1" want="$2" now phase reason message
  local deadline=$((SECONDS + timeout))
  while :; do
    now="$(kubectl -n default get vsrv web-prod-1 -o jsonpath='{.status.phase}{"\t"}{.status.conditions[?(@.type=="Ready")].reason}{"\t"}{.status.conditions[?(@.type=="Ready")].message}' 2>/dev/null || true)"
    if [ -n "$now" ] && [ "$now" != "$last_seen" ]; then
      last_seen="$now"
      IFS=$'\t' read -r phase reason message <<<"$now"
      log "    phase: ${phase:-(none yet)}${reason:+ ($reason: $message)}"
    fi
    [ "${now%%$'\t'*}" = "$want" ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for phase $want"
      return 1
    fi
    sleep 1
  done
}

stage "installing what is missing and starting the local stack"
"$ROOT/hack/stack-up.sh"
source "$STACK/env"
mkdir -p "$DEMO"
: >"$stage_log"

stage "building vsop"
(cd "$ROOT" && npx tsc -p tsconfig.json) >>"$stage_log" 2>&1

stage "installing vsop's CRDs and RBAC (kubectl apply -k deploy/)"
kubectl apply -k "$ROOT/deploy" >>"$stage_log" 2>&1
kubectl wait --for=condition=Established --timeout=60s \
  crd/virtualservers.provisioning.vsop.dev crd/virtualserverclasses.provisioning.vsop.dev >>"$stage_log" 2>&1

stage "applying deploy/samples/, pointed at the local vCenter, DNS and broker"
# The class's Secrets first, with the local stack's values (deploy/samples applies none).
kubectl -n vsop-system create secret generic vcenter-credentials --dry-run=client -o yaml \
  --from-literal=username="$GOVC_USERNAME" --from-literal=password="$GOVC_PASSWORD" | kubectl apply -f - >>"$stage_log" 2>&1
kubectl -n vsop-system create secret generic mcollective-keys --dry-run=client -o yaml \
  --from-file=server-private.pem="$VSOP_MCO_DIR/server-private.pem" \
  --from-file=server-public.pem="$VSOP_MCO_DIR/server-public.pem" \
  --from-file=client-private.pem="$VSOP_MCO_DIR/vsop-private.pem" \
  --from-file=client-public.pem="$VSOP_MCO_DIR/clients/vsop.pem" | kubectl apply -f - >>"$stage_log" 2>&1
kubectl -n vsop-system create secret generic mcollective-broker --dry-run=client -o yaml \
  --from-literal=username=guest --from-literal=password=guest | kubectl apply -f - >>"$stage_log" 2>&1
kubectl apply -k "$ROOT/deploy/samples" >>"$stage_log" 2>&1
node -e '
  const fs = require("fs");
  const e = process.env;
  console.log(JSON.stringify({ spec: {
    vcenter: { url: e.GOVC_URL, caBundle: fs.readFileSync(e.GOVC_TLS_CA_CERTS, "utf8") },
    naming: { dnsServers: [e.VSOP_DNS_SERVER] },
    mcollective: { brokerURL: "amqp://127.0.0.1:5672/", stompPort: Number(e.VSOP_STOMP_PORT) },
  }}));' >"$DEMO/class-patch.json"
kubectl patch virtualserverclass standard --type=merge --patch-file "$DEMO/class-patch.json" >>"$stage_log" 2>&1

stage "starting the operator as its ServiceAccount (log: $LOGS/operator.log)"
# One operator, ever: a second make demo replaces the first one's operator (new build).
if [ -f "$PIDS/operator.pid" ] && kill -0 "$(cat "$PIDS/operator.pid")" 2>/dev/null; then
  log "    stopping the operator a previous make demo started"
  old_pid="$(cat "$PIDS/operator.pid")"
  kill -TERM -- "-$old_pid" 2>/dev/null || kill -TERM "$old_pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$old_pid" 2>/dev/null || true
fi
token="$(kubectl -n vsop-system create token vsop --duration=24h)"
server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
cat >"$DEMO/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{ name: stack, cluster: { server: "$server", certificate-authority: "$VSOP_KUBE_CA" } }]
users: [{ name: vsop, user: { token: "$token" } }]
contexts: [{ name: vsop, context: { cluster: stack, user: vsop } }]
current-context: vsop
EOF
chmod 600 "$DEMO/operator.kubeconfig"
PROV_PORT=$(pick_port 18082)
HEALTH_PORT=$(pick_port 18081)
METRICS_PORT=$(pick_port 18080)
start_bg operator node "$ROOT/dist/main.js" run --kubeconfig "$DEMO/operator.kubeconfig" \
  --operator-namespace vsop-system --resync-period 5s --backoff-max 10s --leader-elect \
  --metrics-bind-address "127.0.0.1:$METRICS_PORT" --health-probe-bind-address "127.0.0.1:$HEALTH_PORT" \
  --provisioning-bind-address "127.0.0.1:$PROV_PORT" --provisioning-url "http://127.0.0.1:$PROV_PORT"
stage_log="$LOGS/operator.log"
wait_until 60 "the operator's /readyz" curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz"

stage "playing the booted server: kickstart, one-time keys, /built, its mcollectived"
uid="$(kubectl -n default get vsrv web-prod-1 -o jsonpath='{.metadata.uid}')"
# Installed by a previous make demo, and its VM still there (a restarted vcsim starts empty).
installed() {
  [ -n "$(kubectl -n default get vsrv web-prod-1 -o jsonpath='{.status.install.completedAt}')" ] &&
    [ -n "$(govc find / -type m -name web-prod-1)" ]
}
if installed; then
  # A second make demo: web-prod-1 was installed by the first one; its mcollectived still runs.
  log "    web-prod-1 is installed already (a previous make demo); nothing to play"
else
follow_phase 120 Installing
ks_token="$(kubectl -n vsop-system get secret "vsop-install-$uid" -o jsonpath='{.data.token}' | base64 -d)"
curl -fsS "http://127.0.0.1:$PROV_PORT/ks/$ks_token" >"$DEMO/web-prod-1.ks"
log "    kickstart: $(grep -c '' "$DEMO/web-prod-1.ks") lines in $DEMO/web-prod-1.ks (no key in it)"
kickstart_fetched() { [ -n "$(kubectl -n default get vsrv web-prod-1 -o jsonpath='{.status.install.kickstartFetchedAt}')" ]; }
wait_until 30 "status.install.kickstartFetchedAt" kickstart_fetched
log "    status.install.kickstartFetchedAt: $(kubectl -n default get vsrv web-prod-1 -o jsonpath='{.status.install.kickstartFetchedAt}')"
# %post fetches the keys once; the server's own identity key is the one vsop will believe. Its
# nonce, as the shipped kickstart sends it, lets a retry whose answer was lost get the same keys.
nonce="$(od -An -N16 -tx1 /dev/urandom | tr -dc 0-9a-f)"
(umask 077 && curl -fsS --retry 5 -H "X-Vsop-Installer-Nonce: $nonce" -X POST \
  "http://127.0.0.1:$PROV_PORT/bootstrap/$ks_token" >"$DEMO/web-prod-1.bootstrap")
sed -n "\\|^cat > /etc/mcollective/vsop/identity.pem <<'VSOP_EOF'\$|,/^VSOP_EOF\$/p" "$DEMO/web-prod-1.bootstrap" |
  sed '1d;$d' >"$DEMO/web-prod-1.identity.pem"
rm -f "$DEMO/web-prod-1.bootstrap"
log "    keys fetched once over /bootstrap (another installer's fetch answers 410)"
IDENTITY_KEY="$DEMO/web-prod-1.identity.pem" "$ROOT/hack/node-up.sh" web-prod-1.example.com web.pp >>"$LOGS/demo.log" 2>&1
curl -fsS -X POST "http://127.0.0.1:$PROV_PORT/built/$ks_token"
unset ks_token nonce
fi
unset token

stage "waiting for Ready, showing each phase change"
follow_phase 300 Ready
kubectl -n default wait --for=condition=Ready vsrv/web-prod-1 --timeout=60s

stage "the result"
echo
kubectl get vsrv -A -o wide
echo
govc vm.info web-prod-1
govc device.ls -vm web-prod-1 | grep -i ethernet
echo
kubectl -n default describe vsrv web-prod-1 | sed -n '/^Events:/,$p'
echo
log "the demo keeps running (operator log: $LOGS/operator.log); stop it with: make demo-down"
