#!/usr/bin/env bash
# Cluster benchmark (issue 12, "Scale" and "Presence at scale"): routing
# by interest over NATS, measured per node.
#
# Each run (RUNS, default 3) gets a fresh PostgreSQL schema on $PGURL_BASE
# (default postgres://postgres@127.0.0.1:5432/test; dropped at the end of
# the run and on exit), its own nats-server on a free port (the machine's
# NATS on 4222 is never used or touched), fresh parleyd processes and data
# directories under $TMPDIR (default /tmp: on-disk, see the df -T line),
# and then:
#
#   single   one node (PostgreSQL + NATS, as a cluster node): the rooms
#            workload, 200 rooms x 10 members, everyone publishing, at
#            $SINGLE_RATES msg/s per member (every step runs; the knee is
#            the best step with p99 <= 20 ms and no loss)
#   local    three nodes, 600 rooms, room r's members all on node r mod 3
#            (200 rooms x 10 per node), at $CLUSTER_RATES msg/s per
#            member; each node should receive from NATS only its own
#            rooms' traffic
#   cross    three nodes, 600 rooms, room r's 5 publishers on node r mod 3
#            and its 5 other members on the next node, the publishers at
#            $CROSS_RATES msg/s (1 and 2: the room's traffic of 0.5 and 1
#            msg/s per member): latency on the sender's node and across
#            NATS
#   presence 30,000 idle users, 10,000 per node (three bench processes,
#            one per node: a process may hold at most its open-file limit,
#            ulimit -Hn), NATS bytes per node while they connect (a
#            connect storm) and over $REST at rest
#
# Accounts: one SQL INSERT into the run's schema makes bench-c-0 ..
# bench-c-29999, all with the argon2id hash of one random password made
# by "parleyd user add" (nobody logs in with it), and parley-bench signs
# their tokens with the nodes' --jwt-secret-file (--jwt-secret-file): the
# server checks every connect as usual (signature, claims, account). Auth.
# Register would cost 30,000 argon2id hashes, about 15 minutes of both
# cores.
#
# CPU: every node's (--server-pid), the bench's own, this nats-server's
# and every postgres process's on the machine (--aux-comms postgres: other
# users of the shared PostgreSQL count too) in every report.
#
# Output: every bench report (one JSON line each, tagged with the run and
# phase) goes to stdout and $OUT; a summary with medians over the runs
# follows on stderr and in $OUT.summary. Only processes this script
# started are signalled, by pid.
#
# Knobs: RUNS=3 PHASES="single local cross presence"
# SINGLE_RATES=0.5,1,1.5,2 CLUSTER_RATES=0.25,0.5,0.75,1 CROSS_RATES=1,2
# DURATION=20s REST=30s IDLE_PER_NODE=10000 LOAD_MAX=1.5 LOAD_WAIT=120
# TRANSPORT=ws-binary KEEP=1 (keep the work directory).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
PHASES=${PHASES:-single local cross presence}
SINGLE_RATES=${SINGLE_RATES:-0.5,1,1.5,2}
CLUSTER_RATES=${CLUSTER_RATES:-0.25,0.5,0.75,1}
CROSS_RATES=${CROSS_RATES:-1,2}
DURATION=${DURATION:-20s}
REST=${REST:-30s}
IDLE_PER_NODE=${IDLE_PER_NODE:-10000}
LOAD_MAX=${LOAD_MAX:-1.5}
LOAD_WAIT=${LOAD_WAIT:-120}           # before each run
LOAD_WAIT_PHASE=${LOAD_WAIT_PHASE:-45} # before each phase
TRANSPORT=${TRANSPORT:-ws-binary}
PGURL_BASE=${PGURL_BASE:-postgres://postgres@127.0.0.1:5432/test}
NODES=3
USERS=$((NODES * IDLE_PER_NODE > 6000 ? NODES * IDLE_PER_NODE : 6000)) # presence, and 600 rooms x 10
WORK=$(mktemp -d "${TMPDIR:-/tmp}/parley-bench-cluster.XXXXXX")
BIN=$WORK/bin
OUT=${OUT:-${TMPDIR:-/tmp}/bench-cluster-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
SUBJECT=parley.bench.$$
RATE_LIMITS=message=unlimited,join=unlimited,connect=unlimited,other=unlimited,typing=unlimited

PIDS=()        # every process started and not yet stopped: "pid name"
SCHEMA=""
NATS_PID=""
NATS_PORT=""
NODE_PIDS=()
NODE_GRPC=()
NODE_HTTP=()
NODE_METRICS=()

say() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT LOG: until something listens on 127.0.0.1:PORT.
wait_port() {
  local end=$((SECONDS + 30))
  until (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -ge $end ] && { say "nothing listens on port $1"; tail -20 "$2" >&2; return 1; }
    sleep 0.1
  done
}

# stop_pid PID: SIGTERM, then SIGKILL after 15 s; waits for it.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

drop_schema() {
  [ -n "$SCHEMA" ] || return 0
  psql "$PGURL_BASE" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null || true
  SCHEMA=""
}

stop_all() {
  local i
  for ((i = ${#NODE_PIDS[@]} - 1; i >= 0; i--)); do
    [ -n "${NODE_PIDS[i]}" ] && stop_pid "${NODE_PIDS[i]}"
  done
  NODE_PIDS=()
  [ -n "$NATS_PID" ] && stop_pid "$NATS_PID"
  NATS_PID=""
}

cleanup() {
  local rc=$?
  stop_all
  drop_schema
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    say "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pg_url: the run's schema for parleyd.
pg_url() {
  python3 - "$PGURL_BASE" "$SCHEMA" <<'EOF'
import sys, urllib.parse as u
base, schema = sys.argv[1:]
p = u.urlparse(base)
q = dict(u.parse_qsl(p.query))
q.setdefault("sslmode", "disable")
q["search_path"] = schema
print(u.urlunparse(p._replace(query=u.urlencode(q))))
EOF
}

# wait_load [SECONDS]: until the 1-minute load average is at most
# LOAD_MAX, for at most SECONDS (default LOAD_WAIT_PHASE); prints the load
# it starts with.
wait_load() {
  local end=$((SECONDS + ${1:-$LOAD_WAIT_PHASE})) l
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    if python3 -c "import sys; sys.exit(0 if float('$l') <= $LOAD_MAX else 1)" || [ $SECONDS -ge $end ]; then
      break
    fi
    sleep 5
  done
  say "uptime: $(uptime)"
  echo "$l"
}

# cluster_up N RUN: a fresh schema, nats-server and N nodes (0..N-1).
cluster_up() {
  local n=$1 run=$2 i dir
  SCHEMA=parley_bench_$(date +%s)_$$
  psql "$PGURL_BASE" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
  NATS_PORT=$(free_port)
  nats-server -a 127.0.0.1 -p "$NATS_PORT" > "$WORK/$run-nats.log" 2>&1 &
  NATS_PID=$!
  wait_port "$NATS_PORT" "$WORK/$run-nats.log"
  say "schema $SCHEMA; nats-server on port $NATS_PORT (pid $NATS_PID)"
  NODE_PIDS=() NODE_GRPC=() NODE_HTTP=() NODE_METRICS=()
  for ((i = 0; i < n; i++)); do
    dir=$WORK/$run-node$i
    NODE_GRPC[i]=127.0.0.1:$(free_port)
    NODE_HTTP[i]=127.0.0.1:$(free_port)
    NODE_METRICS[i]=127.0.0.1:$(free_port)
    "$BIN/parleyd" --data-dir "$dir" --grpc-addr "${NODE_GRPC[i]}" --http-addr "${NODE_HTTP[i]}" --metrics-addr "${NODE_METRICS[i]}" \
      --log-level warn --rate-limits "$RATE_LIMITS" --database-url "$(pg_url)" \
      --nats-url "nats://127.0.0.1:$NATS_PORT" --nats-subject "$SUBJECT" --jwt-secret-file "$WORK/jwt.secret" \
      > "$dir.log" 2>&1 &
    NODE_PIDS[i]=$!
    wait_port "${NODE_GRPC[i]##*:}" "$dir.log"
    wait_port "${NODE_HTTP[i]##*:}" "$dir.log"
    say "node $i: gRPC ${NODE_GRPC[i]}, HTTP ${NODE_HTTP[i]}, metrics ${NODE_METRICS[i]} (pid ${NODE_PIDS[i]}, data $dir)"
  done
}

# make_users: bench-c-0 .. bench-c-$((USERS-1)) in the run's schema, all
# with the argon2id hash of one random password (parleyd user add).
make_users() {
  local t0=$SECONDS
  python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$WORK/seed.password"
  "$BIN/parleyd" user add --username bench-seed --password-file "$WORK/seed.password" --database-url "$(pg_url)" > /dev/null
  psql "$PGURL_BASE" -qv ON_ERROR_STOP=1 -c "
    SET search_path TO $SCHEMA;
    INSERT INTO users (username, password_hash, role, active, created_at)
    SELECT 'bench-c-' || g, (SELECT password_hash FROM users WHERE username = 'bench-seed'), 'user', true,
           (extract(epoch FROM now()) * 1e9)::bigint
    FROM generate_series(0, $((USERS - 1))) g" > /dev/null
  say "$USERS accounts in $((SECONDS - t0)) s"
}

join_list() { local IFS=,; echo "$*"; }

# bench RUN PHASE ARGS...: parley-bench against the running nodes; its
# JSON lines, tagged, go to stdout and $OUT.
bench() {
  local run=$1 phase=$2 load
  shift 2
  load=$(wait_load)
  "$BIN/parley-bench" "$@" --transport "$TRANSPORT" \
    --grpc-addr "$(join_list "${NODE_GRPC[@]}")" --http-addr "$(join_list "${NODE_HTTP[@]}")" \
    --metrics-addr "$(join_list "${NODE_METRICS[@]}")" --server-pid "$(join_list "${NODE_PIDS[@]}")" \
    --jwt-secret-file "$WORK/jwt.secret" --users-prefix bench-c- \
    --aux-pids "nats-server=$NATS_PID" --aux-comms postgres \
    > "$WORK/$run-$phase.json" 2> "$WORK/$run-$phase.err" || say "$phase: parley-bench exited $?"
  grep -v '^time=' "$WORK/$run-$phase.err" >&2 || true
  tag "$run" "$phase" "$load" < "$WORK/$run-$phase.json"
}

# tag RUN PHASE LOAD: JSON lines on stdin, with run, phase and the load
# before the run added, to stdout and $OUT.
tag() {
  python3 -c '
import json, sys
run, phase, load = sys.argv[1], sys.argv[2], float(sys.argv[3])
for line in sys.stdin:
    if line.strip():
        r = json.loads(line)
        r["bench_run"], r["bench_phase"], r["load_before"] = int(run), phase, load
        print(json.dumps(r))
' "$@" | tee -a "$OUT"
}

# presence RUN: 10,000 idle connections per node from one bench process
# each, meeting in a sync directory; process 0 measures every node.
presence() {
  local run=$1 i load sync=$WORK/$run-sync pids=()
  mkdir -p "$sync"
  load=$(wait_load)
  for ((i = 0; i < NODES; i++)); do
    local measure=()
    if [ "$i" = 0 ]; then
      measure=(--metrics-addr "$(join_list "${NODE_METRICS[@]}")" --server-pid "$(join_list "${NODE_PIDS[@]}")"
        --aux-pids "nats-server=$NATS_PID" --aux-comms postgres)
    fi
    "$BIN/parley-bench" idle --transport "$TRANSPORT" --conns "$IDLE_PER_NODE" --duration "$REST" --concurrency 32 \
      --grpc-addr "$(join_list "${NODE_GRPC[@]}")" --http-addr "$(join_list "${NODE_HTTP[@]}")" --connect-nodes "$i" \
      --jwt-secret-file "$WORK/jwt.secret" --users-prefix bench-c- --users-offset $((i * IDLE_PER_NODE)) \
      --sync-dir "$sync" --sync-n "$NODES" --deadline 600s "${measure[@]}" \
      > "$WORK/$run-presence$i.json" 2> "$WORK/$run-presence$i.err" &
    pids[i]=$!
  done
  for ((i = 0; i < NODES; i++)); do
    wait "${pids[i]}" || say "presence: bench process $i exited $?"
  done
  grep -v '^time=' "$WORK/$run-presence0.err" >&2 || true
  for ((i = 1; i < NODES; i++)); do grep -h 'idle (run\|FAIL\|connections in' "$WORK/$run-presence$i.err" >&2 || true; done
  for ((i = 0; i < NODES; i++)); do tag "$run" "presence$i" "$load" < "$WORK/$run-presence$i.json"; done
}

# node_logs RUN: a line per node log: its size and its errors.
node_logs() {
  local f
  for f in "$WORK/$1"-node*.log; do
    say "$(basename "$f"): $(wc -l < "$f") lines, $(grep -c 'level=ERROR' "$f" || true) ERROR, $(grep -c 'level=WARN' "$f" || true) WARN"
    grep -m 3 'level=ERROR\|level=WARN' "$f" >&2 || true
  done
}

mkdir -p "$BIN"
say "building parleyd and parley-bench at $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet || echo '+dirty')"
(cd "$ROOT" && go build -o "$BIN/parleyd" ./server/cmd/parleyd && go build -o "$BIN/parley-bench" ./clients/go/cmd/parley-bench)
python3 -c 'import secrets; print(secrets.token_hex(32))' > "$WORK/jwt.secret"
{
  say "machine: $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2 " MiB"}'); ulimit -n $(ulimit -n) (hard $(ulimit -Hn))"
  say "data directories: $(df -T "$WORK" | awk 'NR == 2 {print $1 " " $2 " mounted on " $7}')"
  say "PostgreSQL: fsync=$(psql "$PGURL_BASE" -tAc 'show fsync'), synchronous_commit=$(psql "$PGURL_BASE" -tAc 'show synchronous_commit'), $(psql "$PGURL_BASE" -tAc 'show server_version')"
  say "nats-server: $(nats-server --version)"
} 2>&1 | tee "$OUT.header" >&2
: > "$OUT"

for ((run = 1; run <= RUNS; run++)); do
  say "=== run $run of $RUNS"
  wait_load "$LOAD_WAIT" > /dev/null
  for phase in $PHASES; do
    case $phase in
      single)
        cluster_up 1 "$run-single"
        make_users
        bench "$run" single rooms --rooms 200 --members 10 --rate "$SINGLE_RATES" --keep-going --duration "$DURATION" --deadline 900s
        node_logs "$run-single"
        stop_all
        drop_schema
        ;;
      local | cross | presence)
        if [ ${#NODE_PIDS[@]} -ne $NODES ]; then
          cluster_up $NODES "$run-cluster"
          make_users
        fi
        case $phase in
          local) bench "$run" local rooms --rooms 600 --members 10 --placement local --rate "$CLUSTER_RATES" --keep-going --duration "$DURATION" --deadline 900s ;;
          cross) bench "$run" cross rooms --rooms 600 --members 10 --publishers 5 --placement cross --rate "$CROSS_RATES" --keep-going --duration "$DURATION" --deadline 900s ;;
          presence) presence "$run" ;;
        esac
        ;;
      *) say "unknown phase $phase"; exit 2 ;;
    esac
  done
  if [ ${#NODE_PIDS[@]} -gt 0 ]; then
    node_logs "$run-cluster"
    stop_all
    drop_schema
  fi
done

python3 "$ROOT/scripts/bench-cluster-summary.py" "$OUT" | tee "$OUT.summary" >&2
say "reports: $OUT (header $OUT.header, summary $OUT.summary)"
