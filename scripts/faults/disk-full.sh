#!/usr/bin/env bash
# Full disk on SQLite: parleyd's data directory is a small filesystem of
# its own (FS=tmpfs, the default, or FS=ext4: a loop-mounted file), which
# is filled up under load for $FULL seconds, then freed. Sends meanwhile
# are answered Unavailable and retried, the log holds a line per fault
# kind per 10s rather than one per command, and nothing acknowledged may
# be lost or stored twice. Needs root (mount).
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" != 0 ]; then echo "disk-full: needs root to mount a small filesystem" >&2; exit 2; fi
DISK=$WORK/disk
mkdir -p "$DISK"
case "${FS:-tmpfs}" in
  tmpfs) mount -t tmpfs -o size="${SIZE:-48m}" tmpfs "$DISK" ;;
  ext4)
    truncate -s "${SIZE:-64m}" "$WORK/disk.img"
    mkfs.ext4 -q -F -m 0 "$WORK/disk.img" # no blocks reserved for root, which parleyd may run as
    mount -o loop "$WORK/disk.img" "$DISK" ;;
  *) echo "FS must be tmpfs or ext4" >&2; exit 2 ;;
esac
at_exit "umount -l '$DISK'"
say "data directory on a ${SIZE:-small} ${FS:-tmpfs} at $DISK"
DATA_DIR=$DISK/data
build
start_parleyd
start_check --duration "${DURATION:-25s}" --send-timeout 60s
sleep 3
dd if=/dev/zero of="$DISK/fill" bs=1M status=none 2>/dev/null || true
dd if=/dev/zero of="$DISK/fill2" bs=4k status=none 2>/dev/null || true # the last blocks
say "disk full ($(df -h --output=avail "$DISK" | tail -1 | tr -d ' ') left) for ${FULL:-8}s"
sleep "${FULL:-8}"
rm -f "$DISK/fill" "$DISK/fill2"
say "disk freed"
finish_check disk-full
