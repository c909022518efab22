#!/usr/bin/env bash
# PostgreSQL cut under load, for a cluster: the $NODES (3) nodes reach
# their schema through a proxy this script starts (parley-check proxy);
# $LEAD (3) seconds into the load the proxy is killed (every connection
# dropped, new ones refused: the database restarting) for $OUTAGE (8)
# seconds, then started again on the same port. Commands meanwhile are
# answered Unavailable and retried; nothing acknowledged may be lost or
# stored twice. PostgreSQL itself is never stopped or signalled.
source "$(dirname "$0")/cluster-lib.sh"
build
PROXY_PORT=$(free_port)
PROXY_PID=""
start_proxy() {
  "$BIN/parley-check" proxy --listen "127.0.0.1:$PROXY_PORT" --target "$(pg_hostport)" 2>> "$WORK/proxy.log" &
  PROXY_PID=$!
  LOG=$WORK/proxy.log wait_port "$PROXY_PORT"
}
at_exit 'if [ -n "$PROXY_PID" ]; then kill -CONT "$PROXY_PID"; kill -KILL "$PROXY_PID"; { wait "$PROXY_PID"; } 2>/dev/null; fi'
start_proxy
DB_VIA=127.0.0.1:$PROXY_PORT
# STORE_TIMEOUT=none leaves the flag out (for a build that predates it).
[ "${STORE_TIMEOUT:-2s}" = none ] || PARLEYD_ARGS+=(--store-timeout "${STORE_TIMEOUT:-2s}")
cluster_up
check_start pg-restart "$(node_addrs)" --duration "${DURATION:-30s}" --send-timeout 60s
sleep "${LEAD:-3}"
say "database gone (proxy killed) for ${OUTAGE:-8}s"
{ kill -KILL "$PROXY_PID"; wait "$PROXY_PID"; } 2>/dev/null || true
PROXY_PID=""
sleep "${OUTAGE:-8}"
start_proxy
say "database back"
check_finish pg-restart cluster-pg-restart
