#!/usr/bin/env bash
# SIGTERM under load: parleyd is stopped with SIGTERM while publishers
# send; it must exit within its shutdown grace (10s, the default), and,
# restarted, lose, duplicate and reorder nothing acknowledged.
source "$(dirname "$0")/lib.sh"
GRACE=10
build
start_parleyd
start_check --duration "${DURATION:-15s}"
sleep 3
stop_parleyd TERM
late=$(python3 -c "import sys; print(int(float(sys.argv[1]) > float(sys.argv[2])))" "$STOP_SECONDS" "$GRACE")
start_parleyd
rc=0
finish_check sigterm || rc=$?
echo "sigterm: parleyd exited ${STOP_SECONDS}s after SIGTERM (grace ${GRACE}s)"
if [ "$late" = 1 ]; then echo "sigterm: FAIL: shutdown took longer than the grace" >&2; rc=1; fi
exit $rc
