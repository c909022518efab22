#!/usr/bin/env bash
# kill -9 of one node under load: of $NODES (3) parleyd nodes sharing
# PostgreSQL and a private NATS, node $VICTIM (default: one at random) is
# killed with SIGKILL $LEAD (3) seconds into the load. Its clients' next
# connection is refused and they fail over to the next node in their list,
# resume there and retry what was not acknowledged. After $DOWN (8)
# seconds the node is started again (REJOIN=0 leaves it down); its clients
# stay where they went. Nothing acknowledged may be lost, duplicated or
# reordered, and some sessions must have failed over.
source "$(dirname "$0")/cluster-lib.sh"
VICTIM=${VICTIM:-$((RANDOM % NODES))}
build
cluster_up
check_start kill9 "$(node_addrs)" --duration "${DURATION:-20s}"
sleep "${LEAD:-3}"
stop_node "$VICTIM" KILL
sleep "${DOWN:-8}"
if [ "${REJOIN:-1}" = 1 ]; then start_node "$VICTIM"; fi
rc=0
check_finish kill9 cluster-kill9-node || rc=$?
failed_over=$(check_json kill9 'sum(n["failed_over"] for n in r["nodes"])' 2>/dev/null || echo 0)
echo "cluster-kill9-node: node $VICTIM killed; $failed_over sessions failed over"
if [ "$failed_over" = 0 ]; then echo "cluster-kill9-node: FAIL: no session failed over" >&2; [ $rc -eq 0 ] && rc=1; fi
exit $rc
