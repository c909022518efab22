#!/usr/bin/env bash
# NATS outage under load: the private nats-server that joins the $NODES
# (3) nodes (started by this script on a free port; the machine's NATS on
# 4222 is never touched) is killed $LEAD (3) seconds into the load and
# started again on the same port after $OUTAGE (10) seconds. The nodes
# reconnect to it and heal; meanwhile each node serves its own clients.
# Nothing acknowledged may be lost, duplicated or reordered, nor missing
# from a subscriber once healed.
source "$(dirname "$0")/cluster-lib.sh"
build
cluster_up
check_start nats-outage "$(node_addrs)" --duration "${DURATION:-30s}"
sleep "${LEAD:-3}"
say "NATS gone (nats-server killed) for ${OUTAGE:-10}s"
stop_nats
sleep "${OUTAGE:-10}"
start_nats
say "NATS back"
check_finish nats-outage cluster-nats-outage
