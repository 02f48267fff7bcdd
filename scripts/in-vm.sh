#!/bin/sh
# Runs inside the test VM (or natively on a ublk host): puts an ext4 file system on the scratch disk, if
# the harness gave us one, as VDISK_TEST_DIR for backing files, then runs the command given.
set -eu
if [ -n "${VDISK_VM_SCRATCH:-}" ] && [ -b "$VDISK_VM_SCRATCH" ]; then
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$VDISK_VM_SCRATCH"
  mkdir -p /scratch
  mount "$VDISK_VM_SCRATCH" /scratch
  export VDISK_TEST_DIR=/scratch
fi
# Daemons start slowly under emulation on a busy host (src/cli/daemon.ts): wait up to 3 minutes for one.
export VDISK_START_TIMEOUT="${VDISK_START_TIMEOUT:-180}"
exec "$@"
