# Shared by the fault scenarios in this directory; sourced, not run.
#
# Each scenario builds parleyd and parley-check, starts parleyd on free
# loopback ports in a fresh work directory, runs parley-check against it,
# strikes the server (or its store) once the checker's publishers are
# acknowledged, and prints the checker's counts. It exits with the
# checker's status: 0 only when nothing acknowledged was lost, duplicated
# or reordered and history has no gap. Only processes it started are
# signalled, by pid.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/parley-faults.XXXXXX")
BIN=$WORK/bin
LOG=$WORK/parleyd.log
PARLEYD_PID=""
CHECK_PID=""
CLEANUPS=()

cleanup() {
  local rc=$?
  [ -n "$CHECK_PID" ] && kill -KILL "$CHECK_PID" 2>/dev/null || true
  if [ -n "$PARLEYD_PID" ]; then
    kill -TERM "$PARLEYD_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$PARLEYD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PARLEYD_PID" 2>/dev/null || true
    wait "$PARLEYD_PID" 2>/dev/null || true
  fi
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[$i]}" || true; done
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

# at_exit CMD runs CMD on exit, last registered first.
at_exit() { CLEANUPS+=("$1"); }

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# build: parleyd and parley-check from this tree; PARLEYD_BIN runs another
# parleyd build instead (e.g. an older commit's, to compare).
build() {
  mkdir -p "$BIN"
  (cd "$ROOT" && go build -o "$BIN/parley-check" ./clients/go/cmd/parley-check)
  if [ -n "${PARLEYD_BIN:-}" ]; then
    cp "$PARLEYD_BIN" "$BIN/parleyd"
  else
    (cd "$ROOT" && go build -o "$BIN/parleyd" ./server/cmd/parleyd)
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT [SECONDS]: until something listens on 127.0.0.1:PORT.
wait_port() {
  local end=$((SECONDS + ${2:-20}))
  until (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -ge $end ] && { say "nothing listens on port $1"; tail -20 "$LOG" >&2; return 1; }
    sleep 0.1
  done
}

GRPC_PORT=$(free_port)
PARLEYD_ARGS=()

# start_parleyd: (re)start parleyd on the same data directory and port,
# with PARLEYD_ARGS added; its log is appended to $LOG.
start_parleyd() {
  "$BIN/parleyd" --data-dir "${DATA_DIR:-$WORK/data}" --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr off --metrics-addr off \
    --log-level warn --rate-limits message=unlimited,join=unlimited,connect=unlimited,other=unlimited \
    "${PARLEYD_ARGS[@]}" >> "$LOG" 2>&1 &
  PARLEYD_PID=$!
  wait_port "$GRPC_PORT"
  say "parleyd running (pid $PARLEYD_PID)"
}

# stop_parleyd SIGNAL: signal parleyd and wait for it to exit; sets
# STOP_SECONDS to how long that took.
stop_parleyd() {
  local t0
  t0=$(date +%s.%N)
  kill "-$1" "$PARLEYD_PID"
  { wait "$PARLEYD_PID"; } 2>/dev/null || true
  STOP_SECONDS=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
  PARLEYD_PID=""
  say "parleyd ended ${STOP_SECONDS}s after SIG$1"
}

# start_check ARGS...: parley-check in the background; ready once every
# publisher has an acknowledged message.
start_check() {
  rm -f "$WORK/ready"
  "$BIN/parley-check" --grpc-addr "127.0.0.1:$GRPC_PORT" --ready-file "$WORK/ready" "$@" > "$WORK/check.json" 2> "$WORK/check.err" &
  CHECK_PID=$!
  local end=$((SECONDS + 60))
  until [ -e "$WORK/ready" ]; do
    if ! kill -0 "$CHECK_PID" 2>/dev/null || [ $SECONDS -ge $end ]; then
      say "the checker never started publishing"; cat "$WORK/check.err" >&2; return 1
    fi
    sleep 0.1
  done
  say "checker publishing (pid $CHECK_PID)"
}

# finish_check NAME: wait for the checker, print its counts, return its status.
finish_check() {
  local rc=0
  wait "$CHECK_PID" || rc=$?
  CHECK_PID=""
  grep -v '^time=' "$WORK/check.err" >&2 || true
  echo "$1: $(cat "$WORK/check.json")"
  echo "$1: parleyd log: $(wc -l < "$LOG") lines, $(grep -c 'level=ERROR' "$LOG" || true) ERROR, $(grep -c 'store unavailable' "$LOG" || true) 'store unavailable'"
  # A send refused for good (Internal, say) is not a loss, since it was
  # never acknowledged, but under these faults every refusal should have
  # been Unavailable, which clients retry.
  local refused
  refused=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("refused", 0))' "$WORK/check.json" 2>/dev/null || echo 0)
  if [ "$refused" != 0 ]; then
    echo "$1: FAIL: $refused sends refused for good instead of Unavailable" >&2
    [ $rc -eq 0 ] && rc=1
  fi
  return $rc
}
