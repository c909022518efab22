#!/usr/bin/env bash
# Steady load over $NODES (3) nodes, no fault: the baseline every other
# cluster scenario is measured against. Nothing acknowledged may be lost,
# duplicated or reordered, and the server's live stream must need no
# repair (see cluster-lib.sh's SERVER_ONLY).
source "$(dirname "$0")/cluster-lib.sh"
build
cluster_up
check_start steady "$(node_addrs)" --duration "${DURATION:-30s}"
check_finish steady cluster-steady
