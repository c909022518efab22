#!/usr/bin/env bash
# kill -9 under load: parleyd is killed with SIGKILL $KILLS times (default
# 3) while publishers send, and restarted on the same data at once; the
# checker's clients reconnect, resume and retry. Nothing acknowledged may
# be lost, duplicated or reordered.
source "$(dirname "$0")/lib.sh"
build
start_parleyd
start_check --duration "${DURATION:-20s}"
for i in $(seq "${KILLS:-3}"); do
  sleep "${EVERY:-3}"
  stop_parleyd KILL
  sleep 0.5
  start_parleyd
done
finish_check kill9
