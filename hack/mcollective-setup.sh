#!/usr/bin/env bash
# Generates the MCollective keys and the stock `mco` client config into .stack/mcollective/
# (the ssl security plugin: one key pair shared by all servers, one per client). stack-up runs
# it once; hack/node-up.sh builds each simulated server's config from what it writes here.
# Servers and the mco client talk STOMP over TLS to the broker (hack/broker-tls.sh, whose
# .stack/broker.env gives the port and the CA). Run again on a running stack it keeps the keys
# and rewrites the configs only, so nodes and clients already using the keys go on working.
source "$(dirname "$0")/lib.sh"
PART=mcollective

[ -f "$STACK/broker.env" ] && source "$STACK/broker.env"
[ -n "${VSOP_STOMP_TLS_PORT:-}" ] && [ -f "${VSOP_BROKER_TLS_DIR:-}/client.crt" ] ||
  die "no STOMP TLS listener known ($STACK/broker.env): run hack/broker-tls.sh first"

MCO="$STACK/mcollective"
STOMP_HOST=127.0.0.1 # the broker certificate's subjectAltName has IP:127.0.0.1
STOMP_PORT="$VSOP_STOMP_TLS_PORT"
STOMP_USER=guest
STOMP_PASSWORD=guest

mkdir -p "$MCO/clients" "$MCO/lib/mcollective/agent" "$MCO/broker-tls" "$LOGS"
ossl() { openssl "$@" >>"$LOGS/mcollective-setup.log" 2>&1 || fail_part mcollective "$LOGS/mcollective-setup.log" "openssl $1 failed"; }

# Servers sign replies with server-private.pem; clients verify them with server-public.pem.
if [ ! -s "$MCO/server-private.pem" ] || [ ! -s "$MCO/server-public.pem" ]; then
  ossl genrsa -out "$MCO/server-private.pem" 2048
  ossl rsa -in "$MCO/server-private.pem" -pubout -out "$MCO/server-public.pem"
fi
# The client "vsop": servers find its public key as <ssl_client_cert_dir>/vsop.pem (callerid cert=vsop).
if [ ! -s "$MCO/vsop-private.pem" ] || [ ! -s "$MCO/clients/vsop.pem" ]; then
  ossl genrsa -out "$MCO/vsop-private.pem" 2048
  ossl rsa -in "$MCO/vsop-private.pem" -pubout -out "$MCO/clients/vsop.pem"
fi
chmod 600 "$MCO/server-private.pem" "$MCO/vsop-private.pem"

# The broker CA, and the client certificate the rabbitmq connector insists on for TLS (the broker
# accepts clients without one, but verifies those presented against its CA).
install -m 644 "$VSOP_BROKER_CA" "$MCO/broker-tls/ca.crt"
install -m 644 "$VSOP_BROKER_TLS_DIR/client.crt" "$MCO/broker-tls/client.crt"
install -m 600 "$VSOP_BROKER_TLS_DIR/client.key" "$MCO/broker-tls/client.key"

# mcollective loads <libdir>/mcollective/agent/<name>.{rb,ddl}; link the project's plugin there.
for f in "$ROOT"/mcollective/agent/*; do ln -sfn "$f" "$MCO/lib/mcollective/agent/"; done

# Connector lines shared by the client config and every node's server.cfg: STOMP over TLS,
# the broker's certificate verified against the stack's broker CA (no fallback to unverified).
cat >"$MCO/connector.cfg.new" <<CFG
connector = rabbitmq
plugin.rabbitmq.vhost = /
plugin.rabbitmq.pool.size = 1
plugin.rabbitmq.pool.1.host = $STOMP_HOST
plugin.rabbitmq.pool.1.port = $STOMP_PORT
plugin.rabbitmq.pool.1.user = $STOMP_USER
plugin.rabbitmq.pool.1.password = $STOMP_PASSWORD
plugin.rabbitmq.pool.1.ssl = 1
plugin.rabbitmq.pool.1.ssl.ca = $MCO/broker-tls/ca.crt
plugin.rabbitmq.pool.1.ssl.cert = $MCO/broker-tls/client.crt
plugin.rabbitmq.pool.1.ssl.key = $MCO/broker-tls/client.key
plugin.rabbitmq.pool.1.ssl.fallback = 0
plugin.rabbitmq.initial_reconnect_delay = 0.1
plugin.rabbitmq.max_reconnect_delay = 5
CFG

cat >"$MCO/client.cfg.new" <<CFG
# The stock mco client against the local stack: mco ping --config $MCO/client.cfg
main_collective = mcollective
collectives = mcollective
libdir = $MCO/lib
logger_type = console
loglevel = warn
color = 0
securityprovider = ssl
plugin.ssl_server_public = $MCO/server-public.pem
plugin.ssl_client_private = $MCO/vsop-private.pem
plugin.ssl_client_public = $MCO/clients/vsop.pem
CFG
cat "$MCO/connector.cfg.new" >>"$MCO/client.cfg.new"
# Renamed into place: node-up and mco may read them at any moment.
mv -f "$MCO/connector.cfg.new" "$MCO/connector.cfg"
mv -f "$MCO/client.cfg.new" "$MCO/client.cfg"
log "keys and client.cfg written to $MCO (STOMP over TLS on $STOMP_HOST:$STOMP_PORT)"
