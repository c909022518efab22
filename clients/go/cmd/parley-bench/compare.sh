#!/usr/bin/env bash
# compare.sh runs one parley-bench workload against Parley and the Socket.IO
# reference in the same run and prints them side by side.
#
# It builds parleyd and parley-bench, starts parleyd on loopback ports with
# a temporary data directory and no rate limits, starts the Socket.IO
# reference (clients/go/bench/socketio, npm ci on first use) with a random
# JWT secret, runs the workload on every transport in $TRANSPORTS, and stops
# both servers.
#
#   clients/go/cmd/parley-bench/compare.sh fanout --members 1000 --rate 20,40,60,80
#   TRANSPORTS=ws-binary,socketio clients/go/cmd/parley-bench/compare.sh idle --conns 2000
#
# Environment: TRANSPORTS (default ws-binary,grpcweb,grpc,socketio), PORT_BASE
# (default 52000: gRPC +51, HTTP +80, metrics +90, Socket.IO +30).
set -euo pipefail

root=$(cd "$(dirname "$0")/../../../.." && pwd)
tmp=$(mktemp -d)
base=${PORT_BASE:-52000}
grpc=127.0.0.1:$((base + 51))
http=127.0.0.1:$((base + 80))
metrics=127.0.0.1:$((base + 90))
sioport=$((base + 30))
secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }
for addr in "$grpc" "$http" "$metrics" "127.0.0.1:$sioport"; do
	if listening "$addr"; then
		echo "compare.sh: $addr is in use; set PORT_BASE" >&2
		exit 1
	fi
done

(cd "$root" && go build -o "$tmp/parleyd" ./server/cmd/parleyd && go build -o "$tmp/parley-bench" ./clients/go/cmd/parley-bench)

"$tmp/parleyd" --grpc-addr "$grpc" --http-addr "$http" --metrics-addr "$metrics" \
	--data-dir "$tmp/data" --access-ttl 2h --log-level warn \
	--rate-limits message=unlimited,join=unlimited,connect=unlimited,other=unlimited,typing=unlimited &
parleyd=$!
pids+=("$parleyd")
JWT_SECRET=$secret PORT=$sioport "$root/clients/go/bench/socketio/start.sh" >/dev/null &
sio=$!
pids+=("$sio")

# Wait (at most 60 s: npm ci may run) until both listen.
for addr in "$grpc" "$http" "127.0.0.1:$sioport"; do
	for _ in $(seq 600); do
		listening "$addr" && break
		kill -0 "$parleyd" "$sio" 2>/dev/null || { echo "compare.sh: a server exited" >&2; exit 1; }
		sleep 0.1
	done
	listening "$addr" || { echo "compare.sh: nothing listens on $addr" >&2; exit 1; }
done

[ $# -ge 1 ] || set -- fanout
workload=$1
shift
echo "parleyd pid $parleyd (pprof: http://$metrics/debug/pprof), socket.io pid $sio; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
PARLEY_BENCH_SIO_SECRET=$secret "$tmp/parley-bench" "$workload" \
	--transport "${TRANSPORTS:-ws-binary,grpcweb,grpc,socketio}" \
	--grpc-addr "$grpc" --http-addr "$http" --sio-addr "127.0.0.1:$sioport" \
	--server-pid "$parleyd" --sio-pid "$sio" "$@"
