#!/usr/bin/env bash
# Runs every fault scenario in turn and prints each one's counts; exits 1
# if any found something lost, duplicated, reordered or missing.
cd "$(dirname "$0")"
rc=0
for s in kill9 sigterm pg-outage disk-full cluster-steady cluster-kill9-node cluster-nats-outage cluster-pg-restart cluster-join; do
  echo "=== $s"
  bash "./$s.sh" || { echo "=== $s FAILED" >&2; rc=1; }
done
exit $rc
