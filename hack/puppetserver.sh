#!/usr/bin/env bash
# The stack's Puppet master: Debian's puppetserver with its own confdir, vardir and CA under
# .stack/puppet/, roles from hack/puppet/ classified by trusted facts, and policy-based autosign
# through deploy/puppet/vsop-autosign (vsop answers; tests point it at their operator by writing
# the url= line of $VSOP_PUPPET_AUTOSIGN_CONFIG).
#   hack/puppetserver.sh start   writes the configuration and the CA, starts the JVM, returns
#   hack/puppetserver.sh wait    waits (bounded) until it serves, makes vsop's CA client
#                                certificate, writes .stack/puppet.env
# stack-up runs `start` early and `wait` last, so the JVM warms up while the rest starts.
source "$(dirname "$0")/lib.sh"
PART=puppetserver

PS="$STACK/puppet"
CONF="$PS/etc/puppet.conf"
CLIENT=vsop-ca-client
WAIT_SECONDS="${VSOP_PUPPETSERVER_WAIT:-180}"

start() {
  command -v puppetserver >/dev/null || die "puppetserver is not installed (hack/install.sh installs it)"
  rm -rf "$PS"
  mkdir -p "$PS"/{etc,conf.d,services.d,var,run,log,vsop-ca-client} "$LOGS" "$PIDS"
  local port
  port="$(pick_port 18140)"
  echo "$port" >"$PS/port"
  openssl rand -hex 32 >"$PS/autosign.secret"
  chmod 600 "$PS/autosign.secret"

  cat >"$CONF" <<EOF
# Written by hack/puppetserver.sh: the stack's Puppet master.
[main]
certname = puppet
server = localhost
serverport = $port
ssldir = $PS/etc/ssl
vardir = $PS/var
logdir = $PS/log
rundir = $PS/run
codedir = $ROOT/hack/puppet
keylength = 2048
[server]
cadir = $PS/etc/ca
dns_alt_names = localhost,IP:127.0.0.1
autosign = $PS/autosign
environment_timeout = unlimited
EOF
  cp "$ROOT/deploy/puppet/custom_trusted_oid_mapping.yaml" "$PS/etc/"
  # The master runs the shipped autosign command with the stack's configuration.
  cat >"$PS/autosign" <<EOF
#!/bin/sh
VSOP_AUTOSIGN_CONFIG='$PS/autosign.conf' exec '$ROOT/deploy/puppet/vsop-autosign' "\$@"
EOF
  chmod 755 "$PS/autosign"
  # No operator yet: nothing answers there, so every CSR stays unsigned until a test names its own.
  printf 'url=http://127.0.0.1:9\nsecret_file=%s\ntimeout=10\n' "$PS/autosign.secret" >"$PS/autosign.conf"

  cp /etc/puppet/puppetserver/services.d/*.cfg "$PS/services.d/"
  cp /etc/puppet/puppetserver/conf.d/{web-routes,metrics}.conf "$PS/conf.d/"
  # The stock rules plus vsop's, inserted first (deploy/puppet/auth.conf.rule).
  awk -v rule="$ROOT/deploy/puppet/auth.conf.rule" '
    { print }
    /^[[:space:]]*rules: \[/ { while ((getline line < rule) > 0) if (line !~ /^#/) print line }
  ' /etc/puppet/puppetserver/conf.d/auth.conf >"$PS/conf.d/auth.conf"
  grep -q "$CLIENT" "$PS/conf.d/auth.conf" || die "could not add vsop's rule to auth.conf"
  cat >"$PS/conf.d/puppetserver.conf" <<EOF
jruby-puppet: {
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: $PS/var/jruby-gems
    gem-path: [\${jruby-puppet.gem-home}, "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: $PS/etc
    server-code-dir: $ROOT/hack/puppet
    server-var-dir: $PS/var
    server-run-dir: $PS/run
    server-log-dir: $PS/log
    # One JRuby for a 2-core machine; catalogs of the sample roles compile in well under a second.
    max-active-instances: 1
    compile-mode: off
}
http-client: {}
profiler: {}
EOF
  printf 'certificate-authority: { }\n' >"$PS/conf.d/ca.conf"
  printf 'global: { logging-config: %s }\n' "$PS/logback.xml" >"$PS/conf.d/global.conf"
  printf 'webserver: {\n    client-auth: want\n    ssl-host: 127.0.0.1\n    ssl-port: %s\n}\n' "$port" \
    >"$PS/conf.d/webserver.conf"
  cat >"$PS/logback.xml" <<EOF
<configuration>
  <appender name="F1" class="ch.qos.logback.core.FileAppender">
    <file>$LOGS/puppetserver.log</file>
    <append>true</append>
    <encoder><pattern>%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%t] [%c{2}] %m%n</pattern></encoder>
  </appender>
  <logger name="org.eclipse.jetty" level="WARN"/>
  <root level="info"><appender-ref ref="F1"/></root>
</configuration>
EOF

  # The CA and the master's certificate, before the JVM starts (the ca CLI is plain Ruby).
  log "making its CA"
  puppetserver ca setup --config "$CONF" >"$LOGS/puppetserver-ca.log" 2>&1 ||
    fail_part puppetserver "$LOGS/puppetserver-ca.log" "could not set up its CA"

  local cp=/usr/share/puppetserver/puppetserver.jar aot
  aot="$(puppetserver_aot_dir)"
  [ -d "$aot/classes" ] && cp="$aot/classes:$cp"
  log "starting on https://localhost:$port (log $LOGS/puppetserver.log)"
  # Heap for a 2-core machine; C1 only and the serial collector start it fastest.
  start_bg puppetserver java -Xms256m -Xmx768m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -XX:+CrashOnOutOfMemoryError -XX:ErrorFile="$LOGS/puppetserver-jvm-error-%p.log" \
    -Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger -Djruby.lib=/usr/share/jruby/lib \
    -cp "$cp" clojure.main -m puppetlabs.trapperkeeper.main \
    --config "$PS/conf.d" --bootstrap-config "$PS/services.d"
  date +%s >"$PS/started"
}

ready() { curl -fsS --cacert "$PS/etc/ssl/certs/ca.pem" "https://localhost:$1/status/v1/simple" | grep -qx running; }

wait_ready() {
  [ -f "$PS/port" ] || die "not started (hack/puppetserver.sh start)"
  local port started
  port="$(cat "$PS/port")"
  started="$(cat "$PS/started")"
  local deadline=$((SECONDS + WAIT_SECONDS))
  until ready "$port" 2>/dev/null; do
    pid_alive puppetserver || fail_part puppetserver "$LOGS/puppetserver.log" "exited while starting"
    [ "$SECONDS" -lt "$deadline" ] ||
      fail_part puppetserver "$LOGS/puppetserver.log" "did not serve within ${WAIT_SECONDS}s"
    sleep 0.5
  done
  log "serving after $(($(date +%s) - started))s"

  # vsop's CA client certificate, signed by the CA over its API with the master's own admin
  # certificate, as `puppetserver ca generate` does on any master (see README "Puppet").
  if [ ! -s "$PS/vsop-ca-client/tls.crt" ]; then
    puppetserver ca generate --certname "$CLIENT" --config "$CONF" >"$LOGS/puppetserver-ca.log" 2>&1 ||
      fail_part puppetserver "$LOGS/puppetserver-ca.log" "could not make vsop's CA client certificate"
    install -m 644 "$PS/etc/ssl/certs/$CLIENT.pem" "$PS/vsop-ca-client/tls.crt"
    install -m 600 "$PS/etc/ssl/private_keys/$CLIENT.pem" "$PS/vsop-ca-client/tls.key"
    install -m 644 "$PS/etc/ssl/certs/ca.pem" "$PS/vsop-ca-client/ca.crt"
  fi
  cat >"$STACK/puppet.env" <<EOF
export VSOP_PUPPET_SERVER="https://localhost:$port"
export VSOP_PUPPET_PORT="$port"
export VSOP_PUPPET_CA="$PS/etc/ssl/certs/ca.pem"
export VSOP_PUPPET_CA_CLIENT_DIR="$PS/vsop-ca-client"
export VSOP_PUPPET_AUTOSIGN_CONFIG="$PS/autosign.conf"
export VSOP_PUPPET_AUTOSIGN_SECRET="$PS/autosign.secret"
export VSOP_PUPPET_LOG="$LOGS/puppetserver.log"
EOF
}

case "${1:-}" in
  start) start ;;
  wait) wait_ready ;;
  *) die "usage: hack/puppetserver.sh start|wait" ;;
esac
