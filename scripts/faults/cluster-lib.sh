# Shared by the cluster fault scenarios (cluster-*.sh); sourced, not run.
# Builds on lib.sh (work directory, build, ports, cleanup, say, at_exit).
#
# A scenario runs $NODES (3) parleyd processes as one cluster: a fresh
# schema of their own on the machine's PostgreSQL ($PGURL_BASE, default
# postgres://postgres@127.0.0.1:5432/test; the schema is dropped on exit),
# a private nats-server this script starts on a free port (the machine's
# NATS is never used or touched), one token secret file, and a data
# directory each. parley-check runs against all of them
# (--grpc-addr a,b,c: members spread over the nodes, failing over to the
# next when theirs refuses), a fault strikes once its publishers are
# acknowledged, and the checker's JSON (with per-node counts) is printed.
# It exits with the checker's status. Only processes it started are
# signalled, by pid.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=${NODES:-3}
PGURL_BASE=${PGURL_BASE:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=parley_faults_$(date +%s)_$$
NATS_PORT=$(free_port)
NATS_SUBJECT=parley.faults.$$
NATS_PID=""
NODE_PORTS=()
NODE_PIDS=()
for ((i = 0; i < NODES; i++)); do
  NODE_PORTS[i]=$(free_port)
  NODE_PIDS[i]=""
done
# DB_VIA, when set (HOST:PORT), is where the nodes reach PostgreSQL (a
# proxy in front of it); the schema is made directly.
DB_VIA=${DB_VIA:-}
declare -A CHECK_PIDS=()

# start_nats: (re)start the private nats-server on $NATS_PORT.
start_nats() {
  "${NATS_SERVER:-nats-server}" -a 127.0.0.1 -p "$NATS_PORT" >> "$WORK/nats.log" 2>&1 &
  NATS_PID=$!
  LOG=$WORK/nats.log wait_port "$NATS_PORT"
  say "nats-server running on port $NATS_PORT (pid $NATS_PID)"
}

# stop_nats: kill the private nats-server (SIGKILL: no goodbye to clients).
stop_nats() {
  { kill -KILL "$NATS_PID"; wait "$NATS_PID"; } 2>/dev/null || true
  NATS_PID=""
}

# pg_url [HOST:PORT]: the schema's URL for parleyd, through HOST:PORT
# instead of $PGURL_BASE's host when given.
pg_url() {
  python3 - "$PGURL_BASE" "$SCHEMA" "${1:-}" <<'EOF'
import sys, urllib.parse as u
base, schema, via = sys.argv[1:]
p = u.urlparse(base)
netloc = p.netloc
if via:
    netloc = (netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else "") + via
q = dict(u.parse_qsl(p.query))
q.setdefault("sslmode", "disable")
q["search_path"] = schema
print(u.urlunparse(p._replace(netloc=netloc, query=u.urlencode(q))))
EOF
}

# pg_hostport: $PGURL_BASE's host:port (for a proxy's target).
pg_hostport() {
  python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(f"{p.hostname}:{p.port or 5432}")' "$PGURL_BASE"
}

# node_addr I: node I's native gRPC address.
node_addr() { echo "127.0.0.1:${NODE_PORTS[$1]}"; }

# node_addrs [I...]: the comma-separated addresses of nodes I... (default
# all, in order), for --grpc-addr.
node_addrs() {
  local out="" i
  local idx=("$@")
  if [ ${#idx[@]} -eq 0 ]; then
    for ((i = 0; i < NODES; i++)); do idx+=("$i"); done
  fi
  for i in "${idx[@]}"; do out+="${out:+,}$(node_addr "$i")"; done
  echo "$out"
}

# start_node I: (re)start node I on its port and data directory, with
# PARLEYD_ARGS added; its log is appended to $WORK/nodeI.log.
start_node() {
  local i=$1
  "$BIN/parleyd" --data-dir "$WORK/node$i" --grpc-addr "$(node_addr "$i")" --http-addr off --metrics-addr off \
    --log-level warn --rate-limits message=unlimited,join=unlimited,connect=unlimited,other=unlimited \
    --database-url "$(pg_url "$DB_VIA")" --nats-url "nats://127.0.0.1:$NATS_PORT" --nats-subject "$NATS_SUBJECT" \
    --jwt-secret-file "$WORK/jwt.secret" "${PARLEYD_ARGS[@]}" >> "$WORK/node$i.log" 2>&1 &
  NODE_PIDS[i]=$!
  LOG=$WORK/node$i.log wait_port "${NODE_PORTS[i]}"
  say "node $i running on $(node_addr "$i") (pid ${NODE_PIDS[i]})"
}

# stop_node I SIGNAL: signal node I and wait for it to exit.
stop_node() {
  local i=$1
  kill "-$2" "${NODE_PIDS[i]}"
  { wait "${NODE_PIDS[i]}"; } 2>/dev/null || true
  NODE_PIDS[i]=""
  say "node $i ended after SIG$2"
}

stop_nodes() {
  local i pid
  for ((i = 0; i < NODES; i++)); do
    pid=${NODE_PIDS[i]}
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < NODES; i++)); do
    pid=${NODE_PIDS[i]}
    [ -n "$pid" ] || continue
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    NODE_PIDS[i]=""
  done
}

stop_checks() {
  local name
  for name in "${!CHECK_PIDS[@]}"; do kill -KILL "${CHECK_PIDS[$name]}" 2>/dev/null || true; done
}

# cluster_up [N]: the schema, the secret, nats-server and nodes 0..N-1
# (default all).
cluster_up() {
  psql "$PGURL_BASE" -qc "CREATE SCHEMA $SCHEMA" >/dev/null
  at_exit "psql '$PGURL_BASE' -qc 'SET client_min_messages = warning; DROP SCHEMA IF EXISTS $SCHEMA CASCADE' >/dev/null"
  say "schema $SCHEMA created"
  python3 -c 'import secrets; print(secrets.token_hex(32))' > "$WORK/jwt.secret"
  at_exit 'if [ -n "$NATS_PID" ]; then kill -KILL "$NATS_PID"; { wait "$NATS_PID"; } 2>/dev/null; fi'
  start_nats
  at_exit stop_nodes
  at_exit stop_checks
  local i
  for ((i = 0; i < ${1:-$NODES}; i++)); do start_node "$i"; done
}

# check_start NAME ADDRS ARGS...: parley-check on ADDRS in the background
# (its output in $WORK/NAME.json and NAME.err); returns once every
# publisher has an acknowledged message. The load is the cluster issue's:
# $PUBLISHERS (6) publishers at $RATE (40) messages a second into rooms
# and direct messages; with SERVER_ONLY=1 (the default) the SDK's repair
# of live gaps is off, so the counts are the server's own stream's.
check_start() {
  local name=$1 addrs=$2
  shift 2
  rm -f "$WORK/$name.ready"
  local only=()
  [ "${SERVER_ONLY:-1}" = 1 ] && only=(--server-only)
  "$BIN/parley-check" --grpc-addr "$addrs" --ready-file "$WORK/$name.ready" \
    --publishers "${PUBLISHERS:-6}" --rate "${RATE:-40}" "${only[@]}" "$@" > "$WORK/$name.json" 2> "$WORK/$name.err" &
  CHECK_PIDS[$name]=$!
  local end=$((SECONDS + 60))
  until [ -e "$WORK/$name.ready" ]; do
    if ! kill -0 "${CHECK_PIDS[$name]}" 2>/dev/null || [ $SECONDS -ge $end ]; then
      say "checker $name never started publishing"; cat "$WORK/$name.err" >&2; return 1
    fi
    sleep 0.1
  done
  say "checker $name publishing on $addrs (pid ${CHECK_PIDS[$name]})"
}

# check_finish NAME [LABEL]: wait for checker NAME, print its counts and
# the nodes' log summary, return its status.
check_finish() {
  local name=$1 label=${2:-$1} rc=0
  wait "${CHECK_PIDS[$name]}" || rc=$?
  unset "CHECK_PIDS[$name]"
  grep -v '^time=' "$WORK/$name.err" >&2 || true
  echo "$label: $(cat "$WORK/$name.json")"
  local i f
  for ((i = 0; i < NODES; i++)); do
    f=$WORK/node$i.log
    [ -e "$f" ] || continue
    echo "$label: node $i log: $(wc -l < "$f") lines, $(grep -c 'level=ERROR' "$f" || true) ERROR, $(grep -c 'store unavailable' "$f" || true) 'store unavailable'"
  done
  # As in lib.sh: under these faults every refusal should have been
  # Unavailable, which clients retry.
  local refused
  refused=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("refused", 0))' "$WORK/$name.json" 2>/dev/null || echo 0)
  if [ "$refused" != 0 ]; then
    echo "$label: FAIL: $refused sends refused for good instead of Unavailable" >&2
    [ $rc -eq 0 ] && rc=1
  fi
  return $rc
}

# check_json NAME EXPR: evaluate a Python expression on checker NAME's
# report (as r), e.g. 'sum(n["failed_over"] for n in r["nodes"])'.
check_json() {
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/$1.json" "$2"
}
