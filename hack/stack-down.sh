#!/usr/bin/env bash
# Stops only what stack-up, node-up and the e2e tests (their operators) started, by their pid
# files: TERM to all, then KILL whatever still runs after 10 seconds.
source "$(dirname "$0")/lib.sh"
PART=stack-down
[ -d "$PIDS" ] || exit 0
names=()
for pidfile in "$PIDS"/*.pid; do
  [ -e "$pidfile" ] || continue
  names+=("$(basename "$pidfile" .pid)")
done
for name in "${names[@]}"; do
  pid="$(cat "$PIDS/$name.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
done
for _ in $(seq 1 20); do
  alive=0
  for name in "${names[@]}"; do kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.5
done
for name in "${names[@]}"; do
  pid="$(cat "$PIDS/$name.pid")"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PIDS/$name.pid"
  log "stopped $name"
done
if [ -f "$PIDS/rabbitmq.started-by-stack" ]; then
  timeout 60 rabbitmqctl stop >/dev/null 2>&1 || true
  rm -f "$PIDS/rabbitmq.started-by-stack"
  log "stopped rabbitmq-server"
fi
