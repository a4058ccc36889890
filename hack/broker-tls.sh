#!/usr/bin/env bash
# The stack's RabbitMQ, with TLS: reuses the machine's broker (or starts one), gives it AMQP and
# STOMP TLS listeners signed by the stack's own broker CA, enables rabbitmq_stomp and declares the
# MCollective exchanges. Writes the broker's coordinates to .stack/broker.env (and refreshes
# those lines of .stack/env when it exists), so it can be run alone against a running stack.
#
# Idempotent: the CA and certificates are made once under $CACHE/broker-tls; the broker's config
# (a marked block in rabbitmq.conf, plain listeners and everything else left as they are) is
# written only when it differs; the broker restarts only when its TLS listeners do not answer a
# handshake with the stack CA (RabbitMQ cannot add TLS listeners at runtime).
source "$(dirname "$0")/lib.sh"
PART=rabbitmq

mkdir -p "$LOGS" "$PIDS" "$CACHE"
START_LOG="$LOGS/rabbitmq.log"
TLS_SRC="$CACHE/broker-tls"
RABBIT_ETC=/etc/rabbitmq # the Debian broker's config directory (the one it reads)
CONF="$RABBIT_ETC/rabbitmq.conf"
TLS_DST="$RABBIT_ETC/vsop-tls"
BEGIN_MARK="# BEGIN vsop-stack-broker-tls"
END_MARK="# END vsop-stack-broker-tls"

# One broker change at a time on this machine (parallel stack-ups would restart it twice).
# (The broker is started with the lock's descriptor closed, so that it does not hold it forever.)
LOCK="$CACHE/broker.lock"
exec 9>"$LOCK"
flock -w 300 9 || die "another hack/broker-tls.sh held $LOCK for 300s"

# The broker's own log, for failures after it started.
broker_log() {
  local f
  f="$(ls -t /var/log/rabbitmq/*.log 2>/dev/null | grep -v -e _upgrade -e startup | head -n 1 || true)"
  echo "${f:-$START_LOG}"
}
running() { ! port_free 5672; }

# tls_answers PORT: a TLS handshake with the stack's broker CA succeeds (certificate verified).
tls_answers() {
  timeout 5 openssl s_client -connect "127.0.0.1:$1" -CAfile "$TLS_SRC/ca.crt" \
    -verify_return_error -verify_ip 127.0.0.1 -brief </dev/null >/dev/null 2>&1
}

# --- the broker CA, its server certificate and the MCollective nodes' client certificate -------
ossl() { openssl "$@" >>"$LOGS/broker-tls.log" 2>&1 || fail_part rabbitmq "$LOGS/broker-tls.log" "openssl $1 failed"; }
pki_ok() {
  local f
  for f in ca.crt server.crt server.key client.crt client.key; do [ -s "$TLS_SRC/$f" ] || return 1; done
  # Renew everything when a certificate has less than 30 days left.
  for f in ca.crt server.crt client.crt; do
    openssl x509 -checkend $((30 * 86400)) -noout -in "$TLS_SRC/$f" >/dev/null 2>&1 || return 1
  done
  openssl verify -CAfile "$TLS_SRC/ca.crt" "$TLS_SRC/server.crt" "$TLS_SRC/client.crt" >/dev/null 2>&1
}
if ! pki_ok; then
  log "making the stack's broker CA and certificates in $TLS_SRC"
  tmp="$(mktemp -d "$CACHE/broker-tls.XXXXXX")"
  ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vsop-stack-broker-ca" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
  issue() { # issue NAME SUBJECT EXTENSIONS
    printf '%b\n' "$3" >"$tmp/$1.ext"
    ossl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$tmp/$1.key" -out "$tmp/$1.csr"
    ossl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
      -days 3650 -out "$tmp/$1.crt" -extfile "$tmp/$1.ext"
  }
  issue server "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment"
  issue client "/CN=vsop-stack-mcollective" "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment"
  rm -f "$tmp"/*.csr "$tmp"/*.ext "$tmp"/*.srl
  chmod 600 "$tmp"/*.key
  chmod 755 "$tmp"
  rm -rf "$TLS_SRC"
  mv "$tmp" "$TLS_SRC"
fi

# --- copies the broker can read (it runs as user rabbitmq; $CACHE may be under a private home) -
broker_user="$(ps -o user= -C beam.smp 2>/dev/null | head -n 1 | tr -d ' ' || true)"
if [ -z "$broker_user" ]; then
  if id rabbitmq >/dev/null 2>&1; then broker_user=rabbitmq; else broker_user="$(id -un)"; fi
fi
mkdir -p "$TLS_DST" 2>/dev/null && [ -w "$RABBIT_ETC" ] && [ -w "$TLS_DST" ] ||
  die "cannot write $RABBIT_ETC (the broker's config): run as root or as the broker's user ($broker_user)"
certs_changed=0
place() { # place SRC DEST MODE
  if ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2.new"
    [ "$(id -u)" = 0 ] && chown "root:$(id -gn "$broker_user")" "$2.new"
    mv -f "$2.new" "$2"
    certs_changed=1
  fi
}
place "$TLS_SRC/ca.crt" "$TLS_DST/ca.crt" 0644
place "$TLS_SRC/server.crt" "$TLS_DST/server.crt" 0644
place "$TLS_SRC/server.key" "$TLS_DST/server.key" 0640
chmod 0755 "$TLS_DST"

# --- the config block ---------------------------------------------------------------------------
if [ -n "${RABBITMQ_CONFIG_FILE:-}" ] || grep -qs '^[[:space:]]*\(export[[:space:]]\+\)\?\(RABBITMQ_\)\?CONFIG_FILE=' "$RABBIT_ETC/rabbitmq-env.conf"; then
  die "the broker reads a config file other than $CONF (CONFIG_FILE is set); add the TLS listeners there by hand"
fi
touch "$CONF"
outside="$(sed "/^$BEGIN_MARK/,/^$END_MARK/d" "$CONF")"
if grep -Eq '^[[:space:]]*(ssl_options\.|listeners\.ssl|stomp\.listeners\.ssl)' <<<"$outside"; then
  die "$CONF already configures TLS outside the vsop block; not changing it (remove those lines or the block's listeners)"
fi
[ -e "$RABBIT_ETC/rabbitmq.config" ] &&
  log "note: $RABBIT_ETC/rabbitmq.config (classic format) exists too; TLS settings are in $CONF"
block_port() { sed -n "/^$BEGIN_MARK/,/^$END_MARK/s/^$1 = 127.0.0.1:\([0-9]*\)$/\1/p" "$CONF"; }
AMQPS_PORT="$(block_port 'listeners\.ssl\.vsop')"
STOMPS_PORT="$(block_port 'stomp\.listeners\.ssl\.vsop')"
# Keep the ports of an earlier run when the broker serves them or they are free; else pick free ones.
ours_or_free() { [ -n "$1" ] && { port_free "$1" || tls_answers "$1"; }; }
if ! ours_or_free "$AMQPS_PORT" || ! ours_or_free "$STOMPS_PORT"; then
  AMQPS_PORT="$(pick_port 5671)"
  STOMPS_PORT="$(pick_port 61614)"
fi
block="$BEGIN_MARK
# Written by hack/broker-tls.sh of vsop's local stack; remove the block to drop the listeners.
# AMQP and STOMP over TLS on loopback, certificates from the stack's own CA ($TLS_SRC).
# Clients without a certificate are accepted (server-auth TLS, login by user and password);
# a client certificate, when one is presented, must be signed by that CA.
listeners.ssl.vsop = 127.0.0.1:$AMQPS_PORT
stomp.listeners.ssl.vsop = 127.0.0.1:$STOMPS_PORT
ssl_options.cacertfile = $TLS_DST/ca.crt
ssl_options.certfile = $TLS_DST/server.crt
ssl_options.keyfile = $TLS_DST/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
$END_MARK"
new_conf="${outside:+$outside
}$block"
backup=""
if [ "$(cat "$CONF")" != "$new_conf" ]; then
  backup="$CONF.vsop-backup"
  cp -p "$CONF" "$backup"
  printf '%s\n' "$new_conf" >"$CONF.new"
  chmod --reference="$CONF" "$CONF.new" 2>/dev/null || chmod 0644 "$CONF.new"
  mv -f "$CONF.new" "$CONF"
  log "wrote the TLS listeners (AMQP $AMQPS_PORT, STOMP $STOMPS_PORT) to $CONF (previous: $backup)"
fi

# --- start, or restart once for the TLS listeners --------------------------------------------------
wait_for_broker() { # plain AMQP and AMQP over TLS answer (the caller fails naming the logs)
  wait_until 120 "RabbitMQ on 5672" bash -c '(exec 3<>/dev/tcp/127.0.0.1/5672)' || return 1
  wait_until 60 "AMQP over TLS on $AMQPS_PORT" tls_answers "$AMQPS_PORT" || return 1
}
# Under systemd the unit keeps the broker; elsewhere (containers, CI) rabbitmq-server -detached.
systemd_unit() { [ -d /run/systemd/system ] && systemctl cat rabbitmq-server.service >/dev/null 2>&1; }
start_broker() {
  if systemd_unit; then
    timeout 180 systemctl start rabbitmq-server.service >>"$START_LOG" 2>&1 9>&-
  else
    rabbitmq-server -detached >>"$START_LOG" 2>&1 9>&-
  fi
}
# restore_and_fail WHY: put the previous config back, bring the broker up with it, stop.
restore_and_fail() {
  if [ -n "$backup" ] && [ -f "$backup" ]; then
    log "restoring $CONF from $backup so the machine's broker keeps working"
    cp -p "$backup" "$CONF"
    running || start_broker || true
    wait_until 120 "RabbitMQ on 5672 with the previous config" bash -c '(exec 3<>/dev/tcp/127.0.0.1/5672)' || true
  fi
  fail_part rabbitmq "$(broker_log)" "$1 (start output: $START_LOG)"
}

if ! running; then
  log "no broker on 5672; starting rabbitmq-server"
  start_broker || fail_part rabbitmq "$START_LOG" "failed to start"
  touch "$PIDS/rabbitmq.started-by-stack"
  wait_for_broker || restore_and_fail "did not come up with TLS (AMQP 5672, AMQPS $AMQPS_PORT) within 180s"
else
  log "reusing the broker on 5672"
fi
timeout 120 rabbitmq-plugins enable rabbitmq_stomp >>"$START_LOG" 2>&1 ||
  fail_part rabbitmq "$START_LOG" "could not enable rabbitmq_stomp"
wait_until 60 "STOMP on 61613" bash -c '(exec 3<>/dev/tcp/127.0.0.1/61613)' ||
  fail_part rabbitmq "$(broker_log)" "STOMP did not listen on 61613 within 60s"

both_tls() { tls_answers "$AMQPS_PORT" && tls_answers "$STOMPS_PORT"; }
if [ "$certs_changed" = 1 ] && ! both_tls; then
  # New certificate files under running listeners: drop Erlang's PEM cache so they are reread.
  timeout 60 rabbitmqctl eval 'ssl:clear_pem_cache().' >>"$START_LOG" 2>&1 ||
    log "could not clear the broker's PEM cache"
fi
if ! wait_until 5 "both TLS listeners" both_tls 2>/dev/null; then
  log "the broker has no TLS listeners yet; restarting it once (clients reconnect)"
  broker_pid="$(ss -Hltnp 'sport = :5672' 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1)"
  if systemd_unit && systemctl is-active --quiet rabbitmq-server.service; then
    timeout 90 systemctl stop rabbitmq-server.service >>"$START_LOG" 2>&1
  else
    timeout 90 rabbitmqctl stop >>"$START_LOG" 2>&1
  fi || fail_part rabbitmq "$START_LOG" "could not stop the broker; it still runs with its old config"
  stopped() { port_free 5672 && { [ -z "$broker_pid" ] || [ ! -d "/proc/$broker_pid" ]; }; }
  wait_until 60 "the broker to stop" stopped ||
    fail_part rabbitmq "$(broker_log)" "did not stop within 60s"
  start_broker || restore_and_fail "failed to start again"
  wait_for_broker || restore_and_fail "did not come back with TLS (AMQPS $AMQPS_PORT) within 180s"
  wait_until 60 "STOMP on 61613" bash -c '(exec 3<>/dev/tcp/127.0.0.1/61613)' ||
    fail_part rabbitmq "$(broker_log)" "STOMP did not listen on 61613 within 60s after the restart"
  log "restarted with TLS listeners"
fi
wait_until 60 "STOMP over TLS on $STOMPS_PORT" tls_answers "$STOMPS_PORT" ||
  fail_part rabbitmq "$(broker_log)" "STOMP over TLS did not answer on $STOMPS_PORT within 60s"

AMQP_URL="amqp://guest:guest@127.0.0.1:5672/"
timeout 30 node "$ROOT/hack/declare-exchanges.mjs" "$AMQP_URL" >>"$START_LOG" 2>&1 ||
  fail_part rabbitmq "$START_LOG" "could not declare the MCollective exchanges"

# --- the broker's coordinates -----------------------------------------------------------------
cat >"$STACK/broker.env.new" <<EOF
export VSOP_AMQP_URL="$AMQP_URL"
export VSOP_AMQPS_URL="amqps://guest:guest@127.0.0.1:$AMQPS_PORT/"
export VSOP_BROKER_CA="$TLS_SRC/ca.crt"
export VSOP_BROKER_TLS_DIR="$TLS_SRC"
export VSOP_STOMP_PORT="61613"
export VSOP_STOMP_TLS_PORT="$STOMPS_PORT"
EOF
mv -f "$STACK/broker.env.new" "$STACK/broker.env"
if [ -f "$STACK/env" ]; then
  # A running stack: replace the broker lines of its env file (atomically: tests source it).
  { grep -v -E '^export (VSOP_AMQP_URL|VSOP_AMQPS_URL|VSOP_BROKER_CA|VSOP_BROKER_TLS_DIR|VSOP_STOMP_PORT|VSOP_STOMP_TLS_PORT)=' "$STACK/env" || true
    cat "$STACK/broker.env"; } >"$STACK/env.new"
  mv -f "$STACK/env.new" "$STACK/env"
fi
log "AMQP 5672 and amqps $AMQPS_PORT, STOMP 61613 and STOMP+TLS $STOMPS_PORT; CA $TLS_SRC/ca.crt"
