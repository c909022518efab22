#!/usr/bin/env bash
# Store outage on PostgreSQL: parleyd keeps its data in a fresh database of
# its own on the machine's PostgreSQL ($PGURL_BASE, default
# postgres://postgres@127.0.0.1:5432), reached through a proxy this script
# starts (parley-check proxy). Under load the proxy is first stopped with
# SIGSTOP for $HANG seconds (a database that hangs), then killed for
# $OUTAGE seconds (gone: connections dropped, new ones refused), then
# started again ($LEAD, $GAP: seconds of load before and between the two;
# $DURATION: how long the checker publishes). Commands meanwhile are answered Unavailable and retried;
# nothing acknowledged may be lost or stored twice. PostgreSQL itself is
# never stopped or signalled.
source "$(dirname "$0")/lib.sh"
PGURL_BASE=${PGURL_BASE:-postgres://postgres@127.0.0.1:5432}
DB=parley_faults_$(date +%s)_$$
build
psql "$PGURL_BASE/postgres" -qc "CREATE DATABASE $DB" >/dev/null
at_exit "psql '$PGURL_BASE/postgres' -qc 'DROP DATABASE IF EXISTS $DB WITH (FORCE)' >/dev/null"
say "database $DB created"

PROXY_PORT=$(free_port)
PG_HOSTPORT=$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' "$PGURL_BASE")
PROXY_PID=""
start_proxy() {
  "$BIN/parley-check" proxy --listen "127.0.0.1:$PROXY_PORT" --target "$PG_HOSTPORT" 2>> "$WORK/proxy.log" &
  PROXY_PID=$!
  wait_port "$PROXY_PORT"
}
at_exit 'if [ -n "$PROXY_PID" ]; then kill -CONT "$PROXY_PID"; kill -KILL "$PROXY_PID"; { wait "$PROXY_PID"; } 2>/dev/null; fi'
start_proxy

PGUSER_PART=$(python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.netloc.rsplit("@", 1)[0] + "@" if "@" in p.netloc else "")' "$PGURL_BASE")
PARLEYD_ARGS=(--database-url "postgres://${PGUSER_PART}127.0.0.1:$PROXY_PORT/$DB?sslmode=disable")
# STORE_TIMEOUT=none leaves the flag out (for a build that predates it).
[ "${STORE_TIMEOUT:-2s}" = none ] || PARLEYD_ARGS+=(--store-timeout "${STORE_TIMEOUT:-2s}")
start_parleyd
start_check --duration "${DURATION:-35s}" --send-timeout 60s
sleep "${LEAD:-3}"
say "database hangs (proxy SIGSTOP) for ${HANG:-8}s"
kill -STOP "$PROXY_PID"
sleep "${HANG:-8}"
kill -CONT "$PROXY_PID"
say "database answers again"
sleep "${GAP:-4}"
say "database gone (proxy killed) for ${OUTAGE:-8}s"
{ kill -KILL "$PROXY_PID"; wait "$PROXY_PID"; } 2>/dev/null || true
PROXY_PID=""
sleep "${OUTAGE:-8}"
start_proxy
say "database back"
finish_check pg-outage
