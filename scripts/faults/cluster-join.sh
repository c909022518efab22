#!/usr/bin/env bash
# A node joins under load: nodes 0 and 1 of $NODES (3) run, and a first
# checker ("before") publishes on them; $LEAD (3) seconds in, node 2
# starts and joins the cluster, and a second checker ("after") starts on
# all three (node 2 first, so its members are spread over the new node
# too) while the first still publishes. Neither may lose, duplicate or
# reorder anything acknowledged: the join disturbs nobody, and the new
# node serves its share at once.
source "$(dirname "$0")/cluster-lib.sh"
[ "$NODES" -ge 3 ] || { echo "cluster-join: needs NODES >= 3" >&2; exit 2; }
build
cluster_up 2
check_start before "$(node_addrs 0 1)" --duration "${DURATION:-30s}"
sleep "${LEAD:-3}"
start_node 2
say "node 2 joined"
check_start after "$(node_addrs 2 0 1)" --duration "${AFTER_DURATION:-15s}"
rc=0
check_finish before cluster-join-before || rc=$?
check_finish after cluster-join-after || rc=$?
exit $rc
