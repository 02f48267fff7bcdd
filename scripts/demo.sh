#!/bin/sh
# The quick-start demo, run where ublk exists (scripts/demo.mjs starts it natively or in the VM): a controller
# and an agent, a thin disk with ext4 on it, storage allocated only where written, a snapshot, a change, a
# clone that still reads the old data, the agent killed with kill -9 and recovered without the file system
# noticing, detach and re-attach with the data intact.
set -eu
cd "$(dirname "$0")/.."
vdisk() { node dist/cli/main.js "$@"; }
dir=${VDISK_TEST_DIR:-/tmp}/vdisk-demo
rm -rf "$dir" && mkdir -p "$dir/mnt" "$dir/clone"
export VDISK_DATA_DIR="$dir/data"
# Bold headings on a terminal only, and never with NO_COLOR (a piped or logged demo gets plain text).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
  step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  step() { printf '\n== %s\n' "$*"; }
fi
cleanup() {
  for m in "$dir/mnt" "$dir/clone"; do mountpoint -q "$m" && umount "$m"; done
  for d in demo demo-clone; do vdisk detach "$d" >/dev/null 2>&1 || true; done
  for pid in $(vdisk agent ls --json 2>/dev/null | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'); do kill "$pid" 2>/dev/null || true; done
  vdisk controller stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "start the controller (SQLite tables in $VDISK_DATA_DIR)"
vdisk controller start

step "add a 1 GiB storage container (a sparse file) and create a thin 512 MiB disk"
vdisk container add pool --path "$dir/pool.img" --size 1G
vdisk create demo --size 512M

step "attach it: the agent of this host starts on demand and serves /dev/ublkbN"
dev=$(vdisk attach demo --host-id demo-host)
echo "demo is $dev"

step "mkfs.ext4 $dev, mount it, write some files"
mkfs.ext4 -q -E nodiscard "$dev"
mount "$dev" "$dir/mnt"
echo "hello from a table-driven TypeScript block device" > "$dir/mnt/hello.txt"
dd if=/dev/urandom of="$dir/mnt/random.bin" bs=1M count=16 status=none
sync
sum=$(sha256sum "$dir/mnt/random.bin" | cut -d' ' -f1)
df -h "$dir/mnt" | tail -1

step "thin provisioning: only the segments ext4 wrote have storage"
vdisk info demo

step "snapshot it (file system frozen for a clean point in time), then change the origin"
fsfreeze -f "$dir/mnt"
vdisk snapshot demo demo-monday
fsfreeze -u "$dir/mnt"
echo "changed after the snapshot" > "$dir/mnt/hello.txt"
sync
cat "$dir/mnt/hello.txt"

step "clone the snapshot and attach the clone: it reads the old data (copy-on-write keeps both)"
vdisk clone demo-monday demo-clone
clone=$(vdisk attach demo-clone --host-id demo-host)
mount "$clone" "$dir/clone"
cat "$dir/clone/hello.txt"
[ "$(sha256sum "$dir/clone/random.bin" | cut -d' ' -f1)" = "$sum" ] && echo "random.bin on the clone: checksum matches"
umount "$dir/clone"
vdisk detach demo-clone
vdisk ls
vdisk info demo

step "kill -9 the agent while the file system is mounted, then start a new one"
pid=$(vdisk agent ls --json | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
kill -9 "$pid"
echo "agent $pid killed; $dev is quiesced (I/O waits, nothing fails)"
vdisk agent start --host-id demo-host
cat "$dir/mnt/hello.txt"
echo 3 > /proc/sys/vm/drop_caches
if [ "$(sha256sum "$dir/mnt/random.bin" | cut -d' ' -f1)" = "$sum" ]; then
  echo "random.bin: checksum matches after the recovery ($sum)"
else
  echo "demo: random.bin came back different" >&2; exit 1
fi
umount "$dir/mnt"

step "detach (the device goes away), attach again: the data is still there"
vdisk detach demo
dev=$(vdisk attach demo --host-id demo-host)
mount -o ro "$dev" "$dir/mnt"
cat "$dir/mnt/hello.txt"
[ "$(sha256sum "$dir/mnt/random.bin" | cut -d' ' -f1)" = "$sum" ] && echo "random.bin: checksum matches ($sum)"
umount "$dir/mnt"
vdisk detach demo
vdisk rm demo-clone
vdisk rm demo-monday
vdisk rm demo
vdisk check
vdisk container ls
step "demo done"
