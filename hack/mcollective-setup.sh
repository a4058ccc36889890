#!/usr/bin/env bash
# Generates the MCollective keys and the stock `mco` client config into .stack/mcollective/
# (the ssl security plugin: one key pair shared by all servers, one per client). stack-up runs
# it once; hack/node-up.sh builds each simulated server's config from what it writes here.
source "$(dirname "$0")/lib.sh"
PART=mcollective

MCO="$STACK/mcollective"
STOMP_HOST=127.0.0.1
STOMP_PORT="${VSOP_STOMP_PORT:-61613}"
STOMP_USER=guest
STOMP_PASSWORD=guest

rm -rf "$MCO"
mkdir -p "$MCO/clients" "$MCO/lib/mcollective/agent" "$LOGS"
ossl() { openssl "$@" >>"$LOGS/mcollective-setup.log" 2>&1 || fail_part mcollective "$LOGS/mcollective-setup.log" "openssl $1 failed"; }

# Servers sign replies with server-private.pem; clients verify them with server-public.pem.
ossl genrsa -out "$MCO/server-private.pem" 2048
ossl rsa -in "$MCO/server-private.pem" -pubout -out "$MCO/server-public.pem"
# The client "vsop": servers find its public key as <ssl_client_cert_dir>/vsop.pem (callerid cert=vsop).
ossl genrsa -out "$MCO/vsop-private.pem" 2048
ossl rsa -in "$MCO/vsop-private.pem" -pubout -out "$MCO/clients/vsop.pem"
chmod 600 "$MCO/server-private.pem" "$MCO/vsop-private.pem"

# mcollective loads <libdir>/mcollective/agent/<name>.{rb,ddl}; link the project's plugin there.
for f in "$ROOT"/mcollective/agent/*; do ln -s "$f" "$MCO/lib/mcollective/agent/"; done

# Connector lines shared by the client config and every node's server.cfg.
cat >"$MCO/connector.cfg" <<CFG
connector = rabbitmq
plugin.rabbitmq.vhost = /
plugin.rabbitmq.pool.size = 1
plugin.rabbitmq.pool.1.host = $STOMP_HOST
plugin.rabbitmq.pool.1.port = $STOMP_PORT
plugin.rabbitmq.pool.1.user = $STOMP_USER
plugin.rabbitmq.pool.1.password = $STOMP_PASSWORD
plugin.rabbitmq.initial_reconnect_delay = 0.1
plugin.rabbitmq.max_reconnect_delay = 5
CFG

cat >"$MCO/client.cfg" <<CFG
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
cat "$MCO/connector.cfg" >>"$MCO/client.cfg"
log "keys and client.cfg written to $MCO"
